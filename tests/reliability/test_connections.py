"""The long versions of the connection bounds (slow): the probe's own header flood (8
connections of 128 MB of headers at once) and a thousand slow sockets, each while a client
keeps sending valid messages that must be answered 200 throughout."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from tests.conftest import Server, eventually
from tests.reliability.helpers import config, rss_kb, send_valid, worker_pids
from tests.server.rawhttp import closed_within, connect, floods

pytestmark = pytest.mark.slow


def _alongside(server: Server, stop: threading.Event, statuses: list[int]) -> None:
    while not stop.is_set():
        statuses.append(send_valid(server, "beside-the-flood")[1])
        time.sleep(0.1)


def test_eight_connections_of_128_mb_headers(make_server: Callable[..., Server]) -> None:
    server = make_server(config())
    [pid] = worker_pids(server)
    before = rss_kb(pid)
    stop, statuses = threading.Event(), list[int]()
    valid = threading.Thread(target=_alongside, args=(server, stop, statuses))
    valid.start()
    endings = floods(server.port, 8, 128)
    stop.set()
    valid.join(60)
    after = rss_kb(pid)
    print({"rss_before_kb": before, "rss_after_kb": after, "endings": endings})  # noqa: T201
    assert set(endings) <= {"431", "reset"} and len(endings) == 8
    assert after - before < 30 * 1024
    assert statuses and set(statuses) == {200}


def test_a_thousand_slow_sockets_are_closed_and_others_served(
        make_server: Callable[..., Server]) -> None:
    server = make_server(config(server_extra="header_timeout = 3\nidle_timeout = 3"))
    started = time.monotonic()
    sockets = [connect(server.port) for _ in range(1000)]
    try:
        for n, sock in enumerate(sockets):
            if n % 3 == 1:
                sock.sendall(b"GET /heal")
            elif n % 3 == 2:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert send_valid(server, "beside-slow-sockets")[1] == 200
        for sock in sockets:
            closed, _ = closed_within(sock, 30)
            assert closed
        elapsed = time.monotonic() - started
        print({"slow_sockets_closed_after_s": round(elapsed, 1)})  # noqa: T201
    finally:
        for sock in sockets:
            sock.close()
    eventually(lambda: send_valid(server, "after-slow-sockets")[1] == 200)
