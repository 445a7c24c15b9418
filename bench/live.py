"""The console's live stream: how soon a message is on a subscriber's stream after its 200, and
what subscribers that never read cost the tracking API.

    .venv/bin/python bench/live.py [--seconds 10] [--rounds 2] [--rate 50]

`bench/run` runs it too (after freshness; `--skip-live` leaves it out) and reports it.

Starts `trackd serve` (one worker, the whole pipeline) on a temporary data directory.

1. Latency: one subscriber reads `GET /api/v1/live` through the gateway, as the browser does,
   while single tracks are sent at a steady `--rate` per second; for each message, the time
   from its 200 to its event on the stream (same clock, same machine). Reports p50, p95, max.
2. Throughput: batches of 100 tracks on `--connections` keep-alive connections for
   `--seconds`, with no subscriber and with 5 subscribers that connect and never read a byte,
   alternating for `--rounds`; events acknowledged per second, and the ratio of the medians.

Results go to stdout and to bench/results/live-<time>.json (run alone) or bench/run's
results. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "bench-admin-token-0123"  # admin tokens are at least 16 characters
KEY = "wk_bench"
CONFIG = f"""
[server]
admin_token = "{ADMIN}"
[[sources]]
name = "bench"
write_keys = ["{KEY}"]
"""


def start(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    (work / "trackd.toml").write_text(CONFIG)
    errors = (work / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "trackd", "serve", "--config",
                             str(work / "trackd.toml"), "--data-dir", str(work / "data"),
                             "--port", "0", "--workers", "1"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=errors)
    errors.close()
    info = work / "data" / "run" / "server.json"
    deadline = time.monotonic() + 60
    while not info.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            said = (work / "serve.log").read_text(errors="replace").strip().splitlines()
            raise RuntimeError("trackd did not start" + (f": {said[-1]}" if said else ""))
        time.sleep(0.05)
    time.sleep(0.2)
    return proc, int(json.loads(info.read_text())["port"])


def latency(port: int, seconds: float, rate: float) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    acked: dict[str, float] = {}
    seen: dict[str, float] = {}
    connected = threading.Event()
    done = threading.Event()

    def subscribe() -> None:
        with httpx.stream("GET", base + "/api/v1/live?source=bench&type=track",
                          headers={"Authorization": f"Bearer {ADMIN}"},
                          timeout=httpx.Timeout(60, read=60)) as response:
            for line in response.iter_lines():
                connected.set()
                if line.startswith("data: "):
                    seen[json.loads(line[6:])["messageId"]] = time.monotonic()
                if done.is_set():
                    return

    reader = threading.Thread(target=subscribe, daemon=True)
    reader.start()
    connected.wait(10)
    with httpx.Client(base_url=base, auth=(KEY, ""), timeout=30) as client:
        count = int(seconds * rate)
        started = time.monotonic()
        for i in range(count):
            time.sleep(max(0.0, started + i / rate - time.monotonic()))
            message_id = f"lat-{i}"
            response = client.post("/v1/track", json={"userId": "u", "event": "Latency",
                                                      "messageId": message_id})
            if response.status_code == 200:
                acked[message_id] = time.monotonic()
    deadline = time.monotonic() + 10
    while len(seen.keys() & acked.keys()) < len(acked) and time.monotonic() < deadline:
        time.sleep(0.05)
    done.set()
    delays = sorted(seen[m] - acked[m] for m in acked if m in seen)
    if not delays:
        return {"sent": len(acked), "seen": 0}
    return {"sent": len(acked), "seen": len(delays), "p50_ms": 1000 * statistics.median(delays),
            "p95_ms": 1000 * delays[int(0.95 * (len(delays) - 1))], "max_ms": 1000 * delays[-1]}


def stalled_subscribers(port: int, count: int) -> list[socket.socket]:
    """Connections that ask for the live stream and never read a byte of it."""
    out = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET /api/v1/live HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer "
                     f"{ADMIN}\r\n\r\n".encode())
        out.append(sock)
    return out


async def _blast(port: int, seconds: float, connections: int) -> int:
    batch = json.dumps({"batch": [{"type": "track", "userId": f"u{i}", "event": "Load",
                                   "properties": {"i": i, "plan": "pro"}}
                                  for i in range(100)]}).encode()
    auth = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
    request = (f"POST /v1/batch HTTP/1.1\r\nHost: bench\r\nAuthorization: {auth}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(batch)}\r\n\r\n"
               ).encode() + batch
    end = time.monotonic() + seconds
    acked = 0

    async def one() -> None:
        nonlocal acked
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < end:
                writer.write(request)
                status = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                if b" 200 " in status:
                    acked += 100
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return acked


def throughput(port: int, seconds: float, connections: int) -> float:
    return asyncio.run(_blast(port, seconds, connections)) / seconds


def measure(seconds: float, rounds: int, rate: float, connections: int,
            say: Callable[[str], None] = print) -> dict[str, Any]:
    """Both measurements on one fresh `trackd serve`; what `main` prints and `bench/run`
    keeps under `live` in its results."""
    with tempfile.TemporaryDirectory(prefix="trackd-live-bench-") as tmp:
        proc, port = start(Path(tmp))
        try:
            lat = latency(port, seconds, rate)
            say(f"live latency at {rate:g} msgs/s: {json.dumps(lat)}")
            none: list[float] = []
            stalled: list[float] = []
            for round_no in range(rounds):
                # the order alternates, so neither side always runs on the fuller log
                for with_subscribers in ((False, True) if round_no % 2 == 0 else (True, False)):
                    socks = stalled_subscribers(port, 5) if with_subscribers else []
                    time.sleep(0.5)
                    events = throughput(port, seconds, connections)
                    (stalled if with_subscribers else none).append(events)
                    for sock in socks:
                        sock.close()
                say(f"round {round_no + 1}: {none[-1]:,.0f} events/s without subscribers, "
                    f"{stalled[-1]:,.0f} with 5 stalled")
        finally:
            proc.terminate()
            proc.wait(60)
    ratio = statistics.median(stalled) / statistics.median(none)
    say(f"batched throughput with 5 stalled subscribers: {ratio:.2f}x of none")
    return {"latency": lat, "rate": rate, "events_per_s_none": none,
            "events_per_s_5_stalled": stalled, "ratio": ratio,
            "args": {"seconds": seconds, "rounds": rounds, "rate": rate,
                     "connections": connections}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    result = measure(args.seconds, args.rounds, args.rate, args.connections,
                     lambda line: print(line, flush=True))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"live-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(result, indent=2))

if __name__ == "__main__":
    main()
