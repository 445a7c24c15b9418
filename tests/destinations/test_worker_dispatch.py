"""The destination worker's dispatcher, found by mutation testing (docs/testing.md): the
concurrency limit, which partial batch lingers, a shutdown during a request, and the failures
it logs and goes on after (a sender's unexpected error, a failed pass, a delivery it could not
record)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tests.conftest import eventually
from tests.destinations.conftest import destination
from tests.destinations.harness import LogHarness, fail_once, message
from tests.destinations.receiver import Received, Receiver, Reply
from tests.destinations.test_worker_edges import metric
from trackd.destinations import ledger_dir
from trackd.destinations.ledger import Ledger, ledger_path
from trackd.destinations.senders import Sender, build_sender
from trackd.destinations.worker import DestinationWorker
from trackd.settings import DestinationSettings

MakeWorker = Callable[..., DestinationWorker]


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def one_record(caplog: pytest.LogCaptureFixture, text: str) -> logging.LogRecord:
    [record] = [r for r in caplog.records if r.getMessage() == text]
    return record


def test_no_more_requests_are_in_flight_than_the_concurrency(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker,
        caplog: pytest.LogCaptureFixture) -> None:
    # Five users, a request each; the receiver holds u0's request until `first` is set and
    # the others until `rest` is.
    first, rest, lock = threading.Event(), threading.Event(), threading.Lock()
    seen = {"arrived": 0, "open": 0, "most": 0}

    def hold(request: Received) -> Reply | None:
        with lock:
            seen["arrived"] += 1
            seen["open"] += 1
            seen["most"] = max(seen["most"], seen["open"])
        (first if request.json()["userId"] == "u0" else rest).wait(30)
        with lock:
            seen["open"] -= 1
        return None

    receiver.rule = hold
    with caplog.at_level(logging.ERROR, "trackd.destinations"):
        worker = make_worker(destination(url=receiver.url, concurrency=2))
        sent = harness.append([message(f"u{n}", n) for n in range(5)])
        eventually(lambda: seen["arrived"] == 2)
        time.sleep(1.5)  # not a wait for the right answer: a chance for a wrong one to send
        assert seen["arrived"] == 2
        # u0 still held: the other slot serves u1 to u4, one after the other.
        rest.set()
        eventually(lambda: len(receiver.accepted()) == 4)
        first.set()
        eventually(lambda: worker.ledger.counts() == {"delivered": 5})
    assert receiver.accepted_ids() == sent[1:] + sent[:1]
    assert seen["most"] == 2
    assert errors(caplog) == []


def test_with_two_batches_due_a_partial_one_goes_at_once(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    # Only a lone partial batch lingers: here u1 fills one batch and u2's partial batch goes
    # with it, despite a linger far longer than the test.
    make_worker(destination(url=receiver.url, batch_size=2, linger=3600))
    u1 = harness.append([message("u1", 0), message("u1", 1), message("u2", 2)])[:2]
    eventually(lambda: len(receiver.accepted()) == 3)
    assert sorted(len(r.messages()) for r in receiver.requests) == [1, 2]
    assert any([m["messageId"] for m in r.messages()] == u1 for r in receiver.requests)


def test_a_lingering_batch_while_a_retry_is_due_later_logs_no_error(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker,
        caplog: pytest.LogCaptureFixture) -> None:
    # u1's full batch fails and is due again in about 10 minutes of the worker's clock; u2's
    # partial batch lingers meanwhile. When the clock moves past the retry, both go.
    skew = [0.0]
    receiver.script(Reply(503))
    worker = make_worker(destination(url=receiver.url, batch_size=2, linger=3600,
                                     backoff_min=600, backoff_max=600),
                         clock=lambda: time.time() + skew[0])
    first = harness.append([message("u1", 0), message("u1", 1)])
    eventually(lambda: worker.ledger.counts() == {"retrying": 2})
    with caplog.at_level(logging.ERROR, "trackd.destinations"):
        second = harness.append([message("u2", 2)])
        eventually(lambda: worker.ledger.active() == 3)
        time.sleep(0.5)  # not a wait for the right answer: a chance for a wrong one to log
        assert receiver.accepted() == []
        skew[0] = 700.0
        eventually(lambda: worker.ledger.counts() == {"delivered": 3})
    assert sorted(receiver.accepted_ids()) == sorted(first + second)
    assert errors(caplog) == []


def test_stop_gives_a_hung_request_stop_timeout_and_a_restart_sends_it_again(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    receiver.reply(hang=True)
    settings = destination(url=receiver.url, timeout=600.0)
    worker = make_worker(settings, stop_timeout=0.2)
    sent = harness.append([message("u1", 0)])
    eventually(lambda: len(receiver.requests) == 1)
    harness.stop(worker, timeout=20)  # the request still hangs (for 60 s, or 600 s)
    receiver.reply(200)
    again = make_worker(settings)
    eventually(lambda: receiver.accepted_ids() == sent)
    eventually(lambda: again.ledger.counts() == {"delivered": 1})


class FirstSendRaises:
    """A real sender whose first request raises `error` instead (a bug, not a DeliveryError)."""

    def __init__(self, inner: Sender, error: Exception) -> None:
        self.name = inner.name
        self._inner = inner
        self._error: Exception | None = error

    async def send(self, bodies: Sequence[bytes]) -> int:
        error, self._error = self._error, None
        if error is not None:
            raise error
        return await self._inner.send(bodies)

    async def aclose(self) -> None:
        await self._inner.aclose()


def started(harness: LogHarness, settings: DestinationSettings, sender: Sender,
            **kw: Any) -> DestinationWorker:
    ledger = Ledger(ledger_path(ledger_dir(harness.root), settings.name))
    worker = DestinationWorker(settings, harness.reader, ledger, sender, harness.metrics, **kw)
    harness.start(worker)
    return worker


def test_an_unexpected_error_of_the_sender_is_logged_and_retried_like_a_failure(
        harness: LogHarness, receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    settings = destination(url=receiver.url, backoff_min=3600, backoff_max=3600)
    sender = FirstSendRaises(build_sender(settings), RuntimeError("boom"))
    with caplog.at_level(logging.INFO, "trackd.destinations"):
        worker = started(harness, settings, sender)
        [sent] = harness.append([message("u1", 0)])
        eventually(lambda: worker.ledger.counts() == {"retrying": 1})
        eventually(lambda: metric(harness, "trackd_destination_retried_total") == 1)
    [row] = worker.ledger.find(sent)
    assert (row["attempts"], row["status"], row["error"]) == (1, None, "RuntimeError: boom")
    assert receiver.requests == []
    record = one_record(caplog, "unexpected error while sending")
    assert record.levelno == logging.ERROR and getattr(record, "destination", None) == "hook"
    assert record.exc_info is not None and str(record.exc_info[1]) == "boom"
    down = one_record(caplog, "destination down; retrying")
    assert getattr(down, "error", None) == "RuntimeError: boom"


def test_a_failed_dispatch_pass_is_logged_and_the_dispatcher_goes_on(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    worker = make_worker(destination(url=receiver.url), start=False)
    failures = fail_once(monkeypatch, worker.ledger, "plan", OSError("disk I/O error"))
    with caplog.at_level(logging.ERROR, "trackd.destinations"):
        harness.start(worker)
        sent = harness.append([message("u1", 0)])
        eventually(lambda: receiver.accepted_ids() == sent)
    assert len(failures) == 1
    record = one_record(caplog, "destination dispatch failed; retrying")
    assert getattr(record, "destination", None) == "hook"
    assert record.exc_info is not None and str(record.exc_info[1]) == "disk I/O error"


def test_a_delivery_that_cannot_be_recorded_is_logged_and_sent_again(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # At least once: the request went through, but the ledger did not take it (a full disk),
    # so the row is still pending and goes again.
    worker = make_worker(destination(url=receiver.url), start=False)
    fail_once(monkeypatch, worker.ledger, "delivered", OSError("database or disk is full"))
    with caplog.at_level(logging.ERROR, "trackd.destinations"):
        harness.start(worker)
        sent = harness.append([message("u1", 0)])
        eventually(lambda: worker.ledger.counts() == {"delivered": 1})
        eventually(lambda: metric(harness, "trackd_destination_delivered_total") == 1)
    assert receiver.accepted_ids() == sent * 2
    record = one_record(caplog, "delivery task failed")
    assert getattr(record, "destination", None) == "hook"
    assert record.exc_info is not None and str(record.exc_info[1]) == "database or disk is full"
