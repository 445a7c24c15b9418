"""What one client connection may hold in a gateway worker: header bytes and count, time to
send a head, time idle, and how many connections a worker keeps open."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Server, eventually
from tests.gateway.helpers import running_server
from tests.reliability.helpers import config, rss_kb, worker_pids
from tests.server.rawhttp import (
    Answer,
    closed_within,
    connect,
    exchange,
    floods,
    parse,
    read_answer,
    request,
)

LIMITS = """
max_header_bytes = 32768
max_headers = 100
header_timeout = 1.5
idle_timeout = 1.5
"""


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("limits") / "data",
                        config(server_extra=LIMITS)) as server:
        yield server


def _refused_as_too_large(answer: Answer | None) -> None:
    assert answer is not None, "the server closed without an answer"
    assert answer.status == 431
    assert answer.headers["connection"] == "close"
    error = answer.json()
    assert error["success"] is False and error["error"]["type"] == "invalid_request_error"
    assert "headers too large" in error["error"]["message"]


def test_headers_within_the_limits_are_served(limited: Server) -> None:
    answer = exchange(limited.port, request(headers={"X-Big": "a" * 30000}))
    assert answer is not None and answer.status == 200
    many = {f"X-H{n}": "v" for n in range(98)}
    answer = exchange(limited.port, request(headers=many))
    assert answer is not None and answer.status == 200


def test_a_header_over_the_byte_limit_gets_431(limited: Server) -> None:
    _refused_as_too_large(exchange(limited.port, request(headers={"X-Big": "a" * 40000})))
    _refused_as_too_large(exchange(limited.port, request("/healthz?" + "q" * 40000)))
    split = {f"X-H{n}": "b" * 4000 for n in range(9)}  # 36 KB over 9 headers
    _refused_as_too_large(exchange(limited.port, request(headers=split)))


def test_too_many_headers_get_431(limited: Server) -> None:
    _refused_as_too_large(exchange(limited.port, request(headers={f"X-H{n}": "v"
                                                                  for n in range(150)})))


def test_header_floods_are_cut_off_and_the_memory_comes_back(limited: Server) -> None:
    """8 connections at once, each sending a 16 MB header, three times over: each is refused
    once the limit is passed, and the worker's memory ends near where it started (it kept
    hundreds of MB when the protocol buffered whole headers)."""
    [pid] = worker_pids(limited)
    before = rss_kb(pid)
    endings = [ending for _ in range(3) for ending in floods(limited.port, 8, 16)]
    assert len(endings) == 24
    assert set(endings) <= {"431", "reset"}, endings
    assert "431" in endings
    after = rss_kb(pid)
    assert after - before < 30 * 1024, (before, after)
    answer = exchange(limited.port, request())
    assert answer is not None and answer.status == 200


def test_a_connection_that_sends_nothing_is_closed(limited: Server) -> None:
    with connect(limited.port) as sock:
        closed, sent = closed_within(sock, 20)
    assert closed, "an idle connection stayed open"
    assert sent == b""


def test_half_a_request_line_is_answered_408_and_closed(limited: Server) -> None:
    with connect(limited.port) as sock:
        sock.sendall(b"POST /v1/tra")
        closed, sent = closed_within(sock, 20)
    assert closed, "a connection with half a request line stayed open"
    answer = parse(sent)
    assert answer is not None and answer.status == 408
    assert answer.json()["error"]["message"] == "Request headers not received in time"


def test_a_header_every_half_second_does_not_keep_a_connection(limited: Server) -> None:
    """Each header arrives well within the idle timeout, but the head as a whole takes
    longer than header_timeout: the connection is closed all the same."""
    with connect(limited.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        closed = False
        for n in range(80):  # 40 s at most
            try:
                sock.sendall(f"X-Slow-{n}: {n}\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            finished, sent = closed_within(sock, 0.5)
            if finished:
                closed = True
                break
        assert closed, "a slow head kept its connection"
        assert time.monotonic() - started < 30


def test_keep_alive_connections_still_work(make_server: Callable[..., Server]) -> None:
    # Its own server with a long idle timeout: on a loaded machine this process may pause for
    # longer than `limited`'s 1.5 s between two requests, and the server would rightly close.
    server = make_server(config(server_extra="idle_timeout = 60"))
    with connect(server.port) as sock:
        for _ in range(3):
            sock.sendall(request())
            answer = read_answer(sock)
            assert answer is not None and answer.status == 200


def test_connections_beyond_the_cap_get_503_with_retry_after(
        make_server: Callable[..., Server]) -> None:
    server = make_server(config(server_extra="max_connections = 4\nidle_timeout = 60"))
    held = [connect(server.port) for _ in range(4)]
    try:
        for sock in held:  # each one is served: they are within the cap
            sock.sendall(request())
            answer = read_answer(sock)
            assert answer is not None and answer.status == 200
        answer = exchange(server.port, request())
        assert answer is not None and answer.status == 503
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["error"] == {"type": "unavailable",
                                          "message": "Too many connections: retry later"}
        held.pop().close()

        def served() -> bool:
            answer = exchange(server.port, request())
            return answer is not None and answer.status == 200

        eventually(served)
    finally:
        for sock in held:
            sock.close()


def test_an_unparsable_request_gets_a_json_400(limited: Server) -> None:
    answer = exchange(limited.port, b"NOT HTTP AT ALL\r\n\r\n")
    assert answer is not None and answer.status == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"
