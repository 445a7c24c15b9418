"""Scale-out on the NATS log: rows/s into PostgreSQL by 1 and 2 pipeline processes, freshness.

    .venv/bin/python bench/scale_out.py [--messages 50000] [--freshness-seconds 20]
                                        [--freshness-rate 500]
                                        [--server postgresql://postgres@127.0.0.1:5432]

Each part gets a stream of its own on the NATS server at $TRACKD_BENCH_NATS (default
nats://127.0.0.1:4222; R1) and a new PostgreSQL database (trust auth), both removed afterwards:

1. load, for 1 then 2 pipeline processes: one `trackd serve --role gateway` takes `messages`
   track calls (batches of 100 on 4 connections; its events/s is reported too) before any
   pipeline runs; then 1 (or 2) `trackd serve --role pipeline` processes (data dirs and admin
   ports of their own, the same stream and database, archive off) load the backlog.
   rows/s = rows loaded after the first count above 0, divided by the time from that count to
   the last message in `_trackd.messages` (start-up excluded);
2. freshness: a gateway and one pipeline process; background batches at `freshness-rate`
   events/s and one tagged track call every 50 ms through the gateway; the database is asked
   every 50 ms which of them are in `<source>.tracks`. Freshness = first seen - the 200, so it
   includes up to ~50 ms of polling.

The gateway's events/s through 1 and 2 gateways is `bench/run`'s targets trackd-nats-1w/-2w.
Not part of the tests; `bench/run --scale-out` runs it after the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from freshness import percentile_with_unseen
from targets import ADMIN_TOKEN, AUTH, NATS_URL, ROOT, SOURCE, WRITE_KEY, remove_stream

BATCH = 100
CONFIG = """\
[server]
admin_token = "{token}"

[log]
url = "{nats}"
stream = "{stream}"

[warehouse]
url = "{database}"

[archive]
enabled = false

[[sources]]
name = "{source}"
write_keys = ["{key}"]
"""


class Proc:
    """One `trackd serve --role <role>` in a session of its own, ready once its server.json
    is written and no longer says its pipeline is starting."""

    def __init__(self, work: Path, name: str, config: Path, role: str) -> None:
        self.data_dir = work / name
        self.log_path = work / f"{name}.log"
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(ROOT / ".venv" / "bin" / "trackd"), "serve", "--config", str(config),
                 "--data-dir", str(self.data_dir), "--port", "0", "--role", role],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=work, start_new_session=True)
        info = self.data_dir / "run" / "server.json"
        deadline = time.monotonic() + 120
        while not info.exists() or json.loads(info.read_text()).get("pipeline") == "starting":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"trackd --role {role} did not start: "
                                   f"{self.log_path.read_text()[-1500:]}")
            time.sleep(0.05)
        self.port = int(json.loads(info.read_text())["port"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@contextlib.contextmanager
def deployment(server: str, work: Path) -> Iterator[tuple[str, Path]]:
    """A new database and a config for a new stream; both removed on the way out."""
    name = f"trackd_scale_{uuid.uuid4().hex[:10]}"
    stream = f"bench-scale-{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    config = work / f"{stream}.toml"
    config.write_text(CONFIG.format(token=ADMIN_TOKEN, nats=NATS_URL, stream=stream,
                                    database=f"{server}/{name}", source=SOURCE, key=WRITE_KEY))
    try:
        yield f"{server}/{name}", config
    finally:
        try:
            asyncio.run(remove_stream(stream))
        finally:
            with psycopg.connect(f"{server}/postgres", autocommit=True) as con:
                con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def batch_body(prefix: str, start: int, count: int) -> bytes:
    return json.dumps({"batch": [
        {"type": "track", "userId": f"user-{(start + i) % 1000}", "event": f"Event {i % 10}",
         "messageId": f"{prefix}-{start + i}",
         "properties": {"plan": "pro", "amount": start + i, "ok": True}}
        for i in range(count)]}).encode()


def post(conn: http.client.HTTPConnection, path: str, body: bytes) -> int:
    conn.request("POST", path, body, {"Content-Type": "application/json",
                                      "Authorization": AUTH})
    response = conn.getresponse()
    response.read()
    return response.status


def fill(port: int, prefix: str, messages: int, connections: int = 4) -> float:
    """Send `messages` track calls in batches on `connections` connections, each batch again
    until it is answered 200; returns events/s."""
    starts = iter(range(0, messages, BATCH))
    lock = threading.Lock()

    def sender() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                start = next(starts, None)
            if start is None:
                break
            body = batch_body(prefix, start, min(BATCH, messages - start))
            while True:
                try:
                    if post(conn, "/v1/batch", body) == 200:
                        break
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                time.sleep(0.1)  # 503 (back-pressure) or a broken connection: again
        conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=sender, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return messages / (time.monotonic() - started)


def count_loaded(url: str) -> int:
    with psycopg.connect(url, connect_timeout=10) as con:
        try:
            row = con.execute("SELECT count(*) FROM _trackd.messages").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0


def load_rate(samples: list[tuple[float, int]], total: int) -> float | None:
    """Rows/s from the first sample above 0 to the first that reached `total`."""
    first = next((s for s in samples if s[1] > 0), None)
    last = next((s for s in samples if s[1] >= total), None)
    if first is None or last is None or last[0] <= first[0]:
        return None
    return (last[1] - first[1]) / (last[0] - first[0])


def run_load(server: str, work: Path, messages: int, pipelines: int, wait: float,
             log: Callable[[str], None]) -> dict[str, Any]:
    with deployment(server, work) as (url, config):
        gateway = Proc(work, f"gw-{pipelines}p", config, "gateway")
        try:
            events_s = fill(gateway.port, f"load{pipelines}", messages)
        finally:
            gateway.stop()
        log(f"  {messages:,} messages in the stream through 1 gateway: {events_s:,.0f} "
            "events/s")
        procs: list[Proc] = []
        samples: list[tuple[float, int]] = []
        try:
            started = time.monotonic()
            for n in range(pipelines):
                procs.append(Proc(work, f"pipe-{pipelines}p-{n}", config, "pipeline"))
            while time.monotonic() - started < wait:
                count = count_loaded(url)
                samples.append((time.monotonic() - started, count))
                if count >= messages:
                    break
                time.sleep(0.2)
        finally:
            for proc in procs:
                proc.stop()
    rate = load_rate(samples, messages)
    loaded = samples[-1][1] if samples else 0
    log(f"  {pipelines} pipeline process(es): {loaded:,} of {messages:,} rows in PostgreSQL, "
        + (f"{rate:,.0f} rows/s" if rate else "no rate"))
    return {"pipelines": pipelines, "messages": messages, "gateway_events_s": events_s,
            "loaded": loaded, "rows_s": rate,
            "seconds": samples[-1][0] if samples else None}


def run_freshness(server: str, work: Path, seconds: float, rate: float,
                  log: Callable[[str], None], interval: float = 0.05,
                  wait_after: float = 30.0) -> dict[str, Any]:
    with deployment(server, work) as (url, config):
        procs = [Proc(work, "fresh-pipe", config, "pipeline")]
        try:
            gateway = Proc(work, "fresh-gw", config, "gateway")
            procs.append(gateway)
            return _freshness(gateway.port, url, seconds, rate, log, interval, wait_after)
        finally:
            for proc in procs:
                proc.stop()


def _freshness(port: int, url: str, seconds: float, rate: float, log: Callable[[str], None],
               interval: float, wait_after: float) -> dict[str, Any]:
    acked: dict[str, float] = {}
    seen: dict[str, float] = {}
    errors: list[str] = []
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def background() -> None:  # batches of 50, paced to `rate` events/s
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        n, next_at = 0, time.monotonic()
        while time.monotonic() < end:
            try:
                if post(conn, "/v1/batch", batch_body("bg", n, 50)) != 200:
                    errors.append("a background batch was not answered 200")
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"background: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            n += 50
            next_at += 50 / rate
            time.sleep(max(0.0, next_at - time.monotonic()))
        conn.close()

    def prober() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        n, next_at = 0, time.monotonic()
        while time.monotonic() < end:
            n += 1
            message_id = f"probe-{n}"
            body = json.dumps({"userId": "probe", "event": "Freshness Probe",
                               "messageId": message_id}).encode()
            try:
                if post(conn, "/v1/track", body) == 200:
                    with lock:
                        acked[message_id] = time.monotonic()
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"probe: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        conn.close()

    threads = [threading.Thread(target=f, daemon=True) for f in (background, prober)]
    for thread in threads:
        thread.start()
    with psycopg.connect(url, autocommit=True) as con:
        while True:
            with lock:
                pending = [mid for mid in acked if mid not in seen]
            if not pending and time.monotonic() >= end:
                break
            if time.monotonic() > end + wait_after:
                break
            if pending:
                try:
                    rows = con.execute(f"SELECT id FROM {SOURCE}.tracks WHERE id = ANY(%s)",
                                       [pending]).fetchall()
                except psycopg.errors.UndefinedTable:
                    rows = []  # nothing loaded yet
                now = time.monotonic()
                for (mid,) in rows:
                    seen.setdefault(str(mid), now)
            time.sleep(interval)
    for thread in threads:
        thread.join()
    delays = sorted(seen[mid] - acked[mid] for mid in acked if mid in seen)
    unseen = len(acked) - len(delays)
    result = {"seconds": seconds, "rate_events_s": rate, "probes_acked": len(acked),
              "probes_seen": len(delays),
              "p50_s": percentile_with_unseen(delays, unseen, 50),
              "p95_s": percentile_with_unseen(delays, unseen, 95),
              "max_s": None if unseen or not delays else delays[-1],
              "error_count": len(errors), "errors": errors[:5]}
    log("  freshness: " + " ".join(lines({"freshness": result})))
    return result


def run(messages: int, freshness_seconds: float, freshness_rate: float, server: str,
        log: Callable[[str], None]) -> dict[str, Any]:
    """Every part of the scenario; the figures as a dict (`lines` renders it)."""
    with psycopg.connect(f"{server}/postgres", connect_timeout=5):
        pass
    asyncio.run(_nats_up())
    work = Path(tempfile.mkdtemp(prefix="trackd-scale-out-"))
    try:
        doc: dict[str, Any] = {"load": []}
        for pipelines in (1, 2):
            doc["load"].append(run_load(server, work, messages, pipelines,
                                        max(120.0, messages / 200), log))
        doc["freshness"] = run_freshness(server, work, freshness_seconds, freshness_rate, log)
        return doc
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _nats_up() -> None:
    import nats

    nc = await nats.connect(NATS_URL, connect_timeout=5, max_reconnect_attempts=0)
    await nc.close()


def _ms(value: float | None) -> str:
    return "not seen" if value is None else f"{value * 1000:,.0f} ms"


def lines(doc: dict[str, Any]) -> list[str]:
    """The figures as Markdown: a table of the loads, a sentence on freshness."""
    out: list[str] = []
    if doc.get("load"):
        out += ["| pipeline processes | rows loaded | rows/s into PostgreSQL | "
                "gateway events/s while filling |", "|---:|---:|---:|---:|"]
        for run_ in doc["load"]:
            rate = f"{run_['rows_s']:,.0f}" if run_["rows_s"] else "-"
            out.append(f"| {run_['pipelines']} | {run_['loaded']:,} of {run_['messages']:,} | "
                       f"{rate} | {run_['gateway_events_s']:,.0f} |")
        out.append("")
    fresh = doc.get("freshness")
    if fresh:
        out.append(f"Freshness at {fresh['rate_events_s']:,.0f} events/s for "
                   f"{fresh['seconds']:g} s: p50 {_ms(fresh['p50_s'])}, p95 "
                   f"{_ms(fresh['p95_s'])}, max {_ms(fresh['max_s'])} "
                   f"({fresh['probes_seen']} of {fresh['probes_acked']} probes seen, "
                   f"{fresh['error_count']} errors).")
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--freshness-seconds", type=float, default=20.0)
    parser.add_argument("--freshness-rate", type=float, default=500.0,
                        help="background events/s through the gateway during freshness")
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args(argv)
    doc = run(args.messages, args.freshness_seconds, args.freshness_rate, args.server,
              lambda line: print(line, flush=True))
    print("\n".join(lines(doc)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
