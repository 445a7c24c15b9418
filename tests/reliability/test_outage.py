"""A destination that is down or slow loses nothing and holds back neither the warehouse nor
the other destinations. Local webhook receivers stand in for the outside world."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.conftest import Server, eventually
from tests.reliability.helpers import (
    ADMIN,
    WEB,
    assert_warehouse_has_exactly,
    config,
    message_id,
    track,
)


class Receiver:
    """A webhook endpoint: mode 'ok' (200), 'down' (503) or 'slow' (sleeps, then 200)."""

    def __init__(self, mode: str, delay: float = 3.0) -> None:
        self.mode = mode
        self.delay = delay
        self.received: list[str] = []
        self.requests = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.requests += 1
                    mode = receiver.mode
                if mode == "slow":
                    time.sleep(receiver.delay)
                if mode == "down":
                    self.send_response(503)
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.received.extend(_message_ids(json.loads(body)))
                with contextlib.suppress(OSError):  # the sender may have timed out
                    self.send_response(200)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/events"

    def ids(self) -> set[str]:
        with self.lock:
            return set(self.received)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def _message_ids(doc: Any) -> list[str]:
    if isinstance(doc, dict) and "batch" in doc:
        doc = doc["batch"]
    items = doc if isinstance(doc, list) else [doc]
    return [str(item.get("messageId")) for item in items if isinstance(item, dict)]


@pytest.fixture
def receivers() -> Iterator[dict[str, Receiver]]:
    made = {"healthy": Receiver("ok"), "down": Receiver("down"), "slow": Receiver("slow")}
    yield made
    for receiver in made.values():
        receiver.close()


def _destinations(receivers: dict[str, Receiver]) -> str:
    return "".join(
        f'\n[[destinations]]\nname = "{name}"\ntype = "webhook"\nurl = "{r.url}"\n'
        f"backoff_min = 0.2\nbackoff_max = 1.0\nmax_attempts = 1000\ntimeout = 10\n"
        for name, r in receivers.items())


def _delivery(server: Server, mid: str, destination: str) -> dict[str, Any] | None:
    """What `GET /api/v1/events/<mid>` says of its delivery to `destination` (None: nothing)."""
    try:
        response = httpx.get(f"{server.url}/api/v1/events/{mid}", timeout=30,
                             headers={"Authorization": f"Bearer {ADMIN}"})
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    for entry in response.json()["destinations"]["deliveries"]:
        if entry["destination"] == destination:
            return dict(entry)
    return None


def _retrying(server: Server, mid: str) -> dict[str, Any] | None:
    entry = _delivery(server, mid, "down")
    return entry if entry is not None and entry["state"] == "retrying" else None


def run_outage(make_server: Callable[..., Server], receivers: dict[str, Receiver],
               messages: int, *, wait: float = 10.0, restart: bool = False) -> None:
    server = make_server(config(extra=_destinations(receivers)), workers=1)
    acked: list[str] = []
    with httpx.Client(base_url=server.url, timeout=30, headers=WEB) as http:
        for start in range(0, messages, 20):
            mids = [message_id("outage") for _ in range(min(20, messages - start))]
            response = http.post("/v1/batch", json={"batch": [track(m) for m in mids]})
            assert response.status_code == 200, response.text
            acked.extend(mids)
    want = set(acked)
    sent = time.monotonic()
    # the healthy destination is not held back by the down and the slow one
    deadline = time.monotonic() + wait
    while not want <= receivers["healthy"].ids():
        assert time.monotonic() < deadline, (
            f"healthy destination got {len(receivers['healthy'].ids() & want)}/{len(want)} "
            f"while another was down; down saw {receivers['down'].requests} requests")
        time.sleep(0.2)
    healthy_after = time.monotonic() - sent
    # the warehouse is not held back either
    assert_warehouse_has_exactly(server, len(want), 20)
    assert receivers["down"].requests > 0, "the down destination was never tried"
    assert not receivers["down"].ids()
    retried = 0
    if restart:  # kill -9 mid-outage: the retry state must survive it
        # two failed attempts recorded: a ledger lost in the kill would start again at one
        before = eventually(lambda: (entry := _retrying(server, acked[0]))
                            and entry["attempts"] >= 2 and entry)
        server.kill()
        server.start()
        after = eventually(lambda: _retrying(server, acked[0]))
        assert after["attempts"] >= before["attempts"], (before, after)
        retried = before["attempts"]
    receivers["down"].mode = "ok"  # the outage ends: everything arrives, nothing lost
    receivers["slow"].delay = 0.0
    deadline = time.monotonic() + 60
    while not (want <= receivers["down"].ids() and want <= receivers["slow"].ids()):
        assert time.monotonic() < deadline, (
            f"after recovery: down got {len(receivers['down'].ids() & want)}/{len(want)}, "
            f"slow got {len(receivers['slow'].ids() & want)}/{len(want)}")
        time.sleep(0.2)
    if restart:  # delivered by the retries that went on after the restart
        delivered = eventually(lambda: _delivery(server, acked[0], "down"))
        assert delivered["state"] == "delivered" and delivered["attempts"] > retried, delivered
    print(f"messages={len(want)} healthy_all_after={healthy_after:.1f}s "  # noqa: T201
          f"down_attempts={receivers['down'].requests} "
          f"recovered_all_after={time.monotonic() - sent:.1f}s restart={restart}")


def test_down_and_slow_destination_lose_nothing_hold_back_nothing_and_survive_kill_9(
        make_server: Callable[..., Server], receivers: dict[str, Receiver]) -> None:
    run_outage(make_server, receivers, messages=100, restart=True)


@pytest.mark.slow
def test_long_outage_with_restart_loses_nothing(
        make_server: Callable[..., Server], receivers: dict[str, Receiver]) -> None:
    run_outage(make_server, receivers, messages=2000, wait=60, restart=True)
