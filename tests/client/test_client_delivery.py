"""Delivery against a real HTTP server that fails on purpose: retries, refusals, limits, order."""

from __future__ import annotations

import base64
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import trackd
from tests.client.client_fault_server import FaultServer, Reply
from trackd.client import (
    APIError,
    Client,
    ClientClosedError,
    Message,
    NetworkError,
    QueueFullError,
    RejectedError,
)
from trackd.messages import limits


class Errors:
    """An `on_error` that remembers what it was given, safe to call from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[tuple[Exception, list[Message]]] = []

    def __call__(self, error: Exception, batch: list[Message]) -> None:
        with self._lock:
            self.calls.append((error, batch))


@contextmanager
def client_for(server: FaultServer, **options: Any) -> Iterator[Client]:
    settings: dict[str, Any] = {"flush_interval": 0.02, "backoff_base": 0.01, "timeout": 5.0}
    settings.update(options)
    client = Client("WK_test", server.url, **settings)
    try:
        yield client
    finally:
        client.shutdown(timeout=10)


def ids(messages: list[Message]) -> list[str]:
    return [message["messageId"] for message in messages]


def test_the_request_is_analytics_pythons_with_trackds_name() -> None:
    with FaultServer() as server, client_for(server) as client:
        _, message = client.track("user123", "Product Purchased", {"price": 99.99})
        assert client.flush(timeout=10)
        (request,) = server.requests
    assert request.path == "/v1/batch"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == f"trackd-python/{trackd.__version__}"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"WK_test:").decode()
    assert "content-encoding" not in request.headers
    assert "x-retry-count" not in request.headers
    assert set(request.body) == {"batch", "sentAt", "writeKey"}
    assert request.body["writeKey"] == "WK_test"
    assert request.body["sentAt"].endswith("+00:00")
    assert request.batch == [message]


def test_gzip_bodies_decode_to_the_same_batch() -> None:
    with FaultServer() as server, client_for(server, gzip=True) as client:
        _, message = client.track("u", "Zipped", {"text": "abc" * 1000})
        assert client.flush(timeout=10)
        (request,) = server.requests
    assert request.headers["content-encoding"] == "gzip"
    assert len(request.raw) < 3000  # compressed
    assert request.batch == [message]


def test_429_with_retry_after_is_waited_for_then_delivered() -> None:
    errors = Errors()
    plan = [Reply(429, {"Retry-After": "1"}, {"code": "rate_limit_error", "message": "slow"})]
    with FaultServer(plan) as server, client_for(server, on_error=errors) as client:
        _, message = client.track("u", "Limited")
        assert client.flush(timeout=10)
        first, second = server.requests
    assert second.at - first.at >= 1.0
    assert (first.status, second.status) == (429, 200)
    assert second.headers["x-retry-count"] == "1"
    assert first.message_ids == second.message_ids == [message["messageId"]]
    assert errors.calls == []


def test_500_then_200_is_retried_and_delivered_exactly_once() -> None:
    errors = Errors()
    with FaultServer([Reply(500)]) as server, client_for(server, on_error=errors) as client:
        _, message = client.track("u", "Flaky")
        assert client.flush(timeout=10)
    assert [r.status for r in server.requests] == [500, 200]
    assert ids(server.delivered()) == [message["messageId"]]
    assert errors.calls == []


def test_400_is_never_retried_and_reaches_on_error_with_the_servers_reason() -> None:
    errors = Errors()
    refusal = {
        "success": False,
        "error": {"type": "validation_error", "message": "Missing required field: event"},
        "code": "validation_error",
        "message": "Missing required field: event",
    }
    seen: list[tuple[Exception | None, Message]] = []
    with (
        FaultServer(default=Reply(400, body=refusal)) as server,
        client_for(server, on_error=errors) as client,
    ):
        _, message = client.track("u", "Refused", callback=lambda e, m: seen.append((e, m)))
        assert client.flush(timeout=10)
        assert len(server.requests) == 1
    ((error, batch),) = errors.calls
    assert isinstance(error, APIError)
    assert (error.status, error.code, error.message) == (
        400,
        "validation_error",
        "Missing required field: event",
    )
    assert batch == [message]
    assert seen == [(error, message)]


def test_a_request_that_times_out_is_retried() -> None:
    errors = Errors()
    with (
        FaultServer([Reply(hang=True)]) as server,
        client_for(server, timeout=0.5, on_error=errors) as client,
    ):
        _, message = client.track("u", "Slow server")
        assert client.flush(timeout=30)
        hung, *retries = server.requests
    # The first request was never answered, so the only way to the second is the client's
    # timeout. Its arrival time is not compared with the timeout: the server notes a request
    # once its thread has read it, later than the client sent it on a busy machine. And a
    # retry whose answer came after the timeout (a busy machine again) was retried in turn.
    assert hung.status == 0 and retries and retries[-1].status == 200
    assert [r.headers["x-retry-count"] for r in retries] == [
        str(n) for n in range(1, len(retries) + 1)]
    assert {tuple(r.message_ids) for r in [hung, *retries]} == {(message["messageId"],)}
    assert errors.calls == []


def test_retries_run_out_after_max_retries_and_the_last_error_is_reported() -> None:
    errors = Errors()
    with (
        FaultServer(default=Reply(503, {"Retry-After": "0"})) as server,
        client_for(server, max_retries=3, on_error=errors) as client,
    ):
        client.track("u", "Down")
        assert client.flush(timeout=10)
        assert len(server.requests) == 4
    ((error, _),) = errors.calls
    assert isinstance(error, APIError) and error.status == 503


def test_no_server_at_all_is_reported_never_raised() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    errors = Errors()
    host = f"http://127.0.0.1:{port}"
    client = Client("wk", host, on_error=errors, max_retries=2, backoff_base=0.01)
    queued, _ = client.track("u", "Nowhere")
    assert queued is True
    assert client.shutdown(timeout=10)
    ((error, _),) = errors.calls
    assert isinstance(error, NetworkError)
    assert isinstance(error.__cause__, OSError)


def test_sync_mode_sends_on_the_callers_thread_and_raises_nothing() -> None:
    errors = Errors()
    with FaultServer([Reply(500), Reply(400)]) as server:
        client = Client("wk", server.url, sync_mode=True, on_error=errors, backoff_base=0.01)
        delivered, first = client.track("u", "Sync")  # 500, then 400: refused
        assert delivered is False
        assert len(server.requests) == 2
        delivered, second = client.track("u", "Sync again")
        assert delivered is True
        assert ids(server.delivered()) == [second["messageId"]]
    assert [type(error) for error, _ in errors.calls] == [APIError]
    assert errors.calls[0][1] == [first]


def test_send_false_drops_silently_and_starts_no_thread() -> None:
    before = set(threading.enumerate())
    client = Client("wk", "http://127.0.0.1:9", send=False)
    assert client.track("u", "Dropped")[0] is True
    assert not [t for t in threading.enumerate() if t not in before and t.name == "trackd-client"]
    assert client.shutdown()


def test_a_full_queue_drops_at_the_call_without_blocking() -> None:
    errors = Errors()
    with (
        FaultServer([Reply(hang=True)]) as server,
        client_for(server, max_queue_size=3, flush_at=1, timeout=30, on_error=errors) as client,
    ):
        client.track("u", "In flight")
        server.wait_for(lambda s: len(s.requests) == 1)  # the consumer is stuck on it
        waiting = [client.track("u", f"Waiting {n}")[1] for n in range(3)]
        started = time.monotonic()
        queued, dropped = client.track("u", "One too many")
        # A call that waited for room would wait out the hung request's 30 s timeout.
        assert time.monotonic() - started < 15
        assert queued is False
        ((error, batch),) = errors.calls
        assert isinstance(error, QueueFullError)
        assert batch == [dropped]
        server.release()
        assert client.flush(timeout=10)
        assert ids(server.delivered())[-3:] == ids(waiting)


def test_batches_hold_at_most_flush_at_messages_in_call_order() -> None:
    with FaultServer() as server, client_for(server, flush_at=100, flush_interval=5) as client:
        sent = [client.track("u", "Many", {"n": n})[1] for n in range(250)]
        assert client.shutdown(timeout=10)
    assert all(len(r.batch) <= 100 for r in server.requests)
    assert ids(server.delivered()) == ids(sent)


def test_batches_stay_under_500kb() -> None:
    blob = "x" * 30_000
    with FaultServer() as server, client_for(server, flush_interval=5) as client:
        sent = [client.track("u", "Big", {"blob": blob})[1] for _ in range(40)]
        assert client.shutdown(timeout=10)
    assert len(server.requests) >= 3
    assert all(len(r.raw) < limits.MAX_BATCH_BYTES for r in server.requests)
    assert max(len(r.raw) for r in server.requests) > 400_000  # batches are filled, not tiny
    assert ids(server.delivered()) == ids(sent)


def test_shutdown_delivers_everything_queued() -> None:
    with FaultServer() as server:
        client = Client("wk", server.url, flush_interval=60)
        sent = [client.identify(f"user{n}", {"n": n})[1] for n in range(30)]
        assert client.shutdown(timeout=10)
        assert ids(server.delivered()) == ids(sent)


def test_shutdown_that_runs_out_of_time_reports_what_is_left() -> None:
    errors = Errors()
    with FaultServer(default=Reply(503)) as server:
        client = Client(
            "wk", server.url, on_error=errors, flush_at=1, backoff_base=30, flush_interval=0
        )
        sent = [client.track("u", f"Stuck {n}")[1] for n in range(3)]
        server.wait_for(lambda s: len(s.requests) >= 1)
        started = time.monotonic()
        assert client.shutdown(timeout=0.2) is False
        assert time.monotonic() - started < 15  # not the 30 s backoff: the timeout counts
    reported = [m for error, batch in errors.calls for m in batch]
    assert sorted(ids(reported)) == sorted(ids(sent))
    assert all(isinstance(error, ClientClosedError) for error, _ in errors.calls)
    in_flight = [e for e, _ in errors.calls if isinstance(e.__cause__, APIError)]
    assert len(in_flight) == 1


def test_a_client_is_usable_again_after_shutdown() -> None:
    with FaultServer() as server:
        client = Client("wk", server.url, flush_interval=0.01)
        first = client.track("u", "Before")[1]
        assert client.shutdown(timeout=10)
        second = client.track("u", "After")[1]
        assert client.shutdown(timeout=10)
        assert ids(server.delivered()) == ids([first, second])


def test_callbacks_hear_about_every_message_and_their_errors_are_contained() -> None:
    heard: list[tuple[Exception | None, str]] = []

    def callback(error: Exception | None, message: Message) -> None:
        heard.append((error, message["event"]))
        raise RuntimeError("a broken callback must not stop delivery")

    def broken_on_error(error: Exception, batch: list[Message]) -> None:
        raise RuntimeError("a broken on_error must not stop delivery")

    with FaultServer([Reply(400)]) as server, client_for(server, on_error=broken_on_error) as c:
        c.track("u", "Refused", callback=callback)
        assert c.flush(timeout=10)
        c.track("u", "Delivered", callback=callback)
        assert c.flush(timeout=10)
        assert len(server.delivered()) == 1
    assert [(type(e), name) for e, name in heard] == [
        (APIError, "Refused"),
        (type(None), "Delivered"),
    ]


def test_many_threads_may_call_at_once() -> None:
    with FaultServer() as server, client_for(server, flush_at=50) as client:
        sent: list[str] = []
        lock = threading.Lock()

        def work(n: int) -> None:
            for i in range(50):
                message = client.track(f"user{n}", "Threaded", {"i": i})[1]
                with lock:
                    sent.append(message["messageId"])

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert client.flush(timeout=10)
        assert sorted(ids(server.delivered())) == sorted(sent)
        assert len(sent) == 400


def test_messages_refused_one_by_one_in_a_200_are_reported_alone() -> None:
    errors = Errors()
    heard: list[tuple[Exception | None, str]] = []
    answer = {
        "success": True,
        "accepted": 2,
        "rejected": [
            {
                "index": 1,
                "messageId": "ignored",
                "error": {"type": "validation_error", "message": "Unknown event for source"},
            },
            {"index": 99, "error": {"type": "validation_error", "message": "out of range"}},
        ],
    }
    with (
        FaultServer([Reply(200, body=answer)]) as server,
        client_for(server, on_error=errors, flush_interval=5) as client,
    ):
        sent = [
            client.track("u", f"E{n}", callback=lambda e, m: heard.append((e, m["event"])))[1]
            for n in range(3)
        ]
        assert client.flush(timeout=10)
        assert len(server.requests) == 1
    ((error, batch),) = errors.calls
    assert isinstance(error, RejectedError) and isinstance(error, APIError)
    assert (error.status, error.code, error.message, error.index) == (
        200,
        "validation_error",
        "Unknown event for source",
        1,
    )
    assert batch == [sent[1]]
    assert heard == [(None, "E0"), (error, "E1"), (None, "E2")]


def test_a_batch_refused_whole_reports_each_messages_own_reason() -> None:
    errors = Errors()
    answer = {
        "success": False,
        "error": {"type": "validation_error", "message": "No valid message in batch"},
        "code": "validation_error",
        "message": "No valid message in batch",
        "accepted": 0,
        "rejected": [
            {"index": 0, "error": {"type": "validation_error", "message": "Reason A"}},
            {"index": 1, "error": {"type": "validation_error", "message": "Reason B"}},
        ],
    }
    with (
        FaultServer([Reply(400, body=answer)]) as server,
        client_for(server, on_error=errors, flush_interval=5) as client,
    ):
        sent = [client.track("u", f"E{n}")[1] for n in range(2)]
        assert client.flush(timeout=10)
        assert len(server.requests) == 1
    assert [(str(e), b) for e, b in errors.calls] == [
        ("400 validation_error: Reason A", [sent[0]]),
        ("400 validation_error: Reason B", [sent[1]]),
    ]


def test_flush_and_shutdown_from_a_callback_return_instead_of_deadlocking() -> None:
    results: list[bool] = []
    with FaultServer() as server:
        client = Client("wk", server.url, flush_interval=0.01)

        def callback(error: Exception | None, message: Message) -> None:
            results.append(client.flush(timeout=5))
            results.append(client.shutdown(timeout=5))

        client.track("u", "Reentrant", callback=callback)
        server.wait_for(lambda _: len(results) == 2)
        assert client.shutdown(timeout=10)
    assert results == [False, False]


def test_proxies_are_used_when_given() -> None:
    with FaultServer() as proxy:
        client = Client("wk", "http://trackd.invalid:8088", proxies={"http": proxy.url})
        client.track("u", "Via proxy")
        assert client.shutdown(timeout=10)
        (request,) = proxy.requests
    assert request.path == "http://trackd.invalid:8088/v1/batch"


def test_proxy_environment_variables_are_not_consulted(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with FaultServer() as server, client_for(server) as client:
        client.track("u", "Direct")
        assert client.flush(timeout=10)
        assert len(server.delivered()) == 1


def test_debug_and_log_handler_log_what_is_sent() -> None:
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("trackd.client")
    level, handler = logger.level, Collect()
    try:
        with FaultServer() as server, client_for(server, debug=True, log_handler=handler) as c:
            c.track("u", "Logged")
            assert c.flush(timeout=10)
        assert any("posting 1 messages" in r.getMessage() for r in records)
        assert any("batch delivered" in r.getMessage() for r in records)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
