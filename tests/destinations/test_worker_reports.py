"""What a destination worker reports of failed requests, found by mutation testing
(docs/testing.md): the counters of a request whose messages end differently, and the server
log's lines for a destination going down, coming back and dead-lettering."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest

from tests.conftest import eventually
from tests.destinations.conftest import destination
from tests.destinations.harness import LogHarness, message
from tests.destinations.receiver import Received, Receiver, Reply
from tests.destinations.test_worker_edges import metric
from trackd.destinations.worker import DestinationWorker

MakeWorker = Callable[..., DestinationWorker]


def test_one_failed_request_with_a_message_too_old_counts_it_dead_and_the_other_retried(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    # The first message waits for a second one (batch of 2, a linger that never ends); the
    # worker's clock moves 2 hours meanwhile, so when their request fails the first is past
    # max_age (dead) and the second is retried, then delivered.
    skew = [0.0]
    receiver.script(Reply(500))
    worker = make_worker(destination(url=receiver.url, batch_size=2, linger=1e9,
                                     max_age_hours=1.0), clock=lambda: time.time() + skew[0])
    old = harness.append([message("u1", 0)])
    eventually(lambda: worker.ledger.active() == 1)
    skew[0] = 2 * 3600
    young = harness.append([message("u2", 1)])
    eventually(lambda: worker.ledger.counts() == {"dead": 1, "delivered": 1})
    assert worker.ledger.find(old[0])[0]["state"] == "dead"
    assert receiver.accepted_ids() == young
    eventually(lambda: metric(harness, "trackd_destination_delivered_total") == 1)
    assert metric(harness, "trackd_destination_dead_total") == 1
    assert metric(harness, "trackd_destination_retried_total") == 1


def test_a_message_is_dead_from_max_age_on_to_the_second(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    # max_age 1 hour, on the test's own clock (it moves only when told): three messages wait
    # for one request (batch of 3, a linger that never ends), taken in 3600.5 s, 3599.5 s
    # and 0 s before it fails. The first is past max_age (dead), the other two are retried.
    receiver.reply(500)
    at = [time.time()]
    worker = make_worker(destination(url=receiver.url, batch_size=3, linger=1e9,
                                     max_age_hours=1.0), clock=lambda: at[0])
    ids = harness.append([message("u0", 0)])
    eventually(lambda: worker.ledger.active() == 1)
    at[0] += 1.0
    ids += harness.append([message("u1", 1)])
    eventually(lambda: worker.ledger.active() == 2)
    at[0] += 3599.5
    ids += harness.append([message("u2", 2)])
    eventually(lambda: worker.ledger.counts() == {"dead": 1, "retrying": 2})
    assert [worker.ledger.find(m)[0]["state"] for m in ids] == ["dead", "retrying", "retrying"]


def test_a_destination_down_then_up_then_refusing_logs_a_line_each_with_its_error(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker,
        caplog: pytest.LogCaptureFixture) -> None:
    def refuse(request: Received) -> Reply | None:
        return Reply(400, body=b"no such event") if request.json()["userId"] == "r" else None

    receiver.script(Reply(503, body=b"busy"))
    receiver.rule = refuse
    with caplog.at_level(logging.INFO, "trackd.destinations"):
        worker = make_worker(destination(url=receiver.url))
        harness.append([message("u", 0)])
        eventually(lambda: worker.ledger.counts() == {"delivered": 1})
        harness.append([message("r", 1)])
        eventually(lambda: worker.ledger.counts() == {"delivered": 1, "dead": 1})
        eventually(lambda: any(r.msg == "messages dead-lettered" for r in caplog.records))
    lines = [(r.msg, getattr(r, "messages", None), getattr(r, "error", None))
             for r in caplog.records if r.levelno >= logging.INFO]
    assert lines == [("destination down; retrying", None, "HTTP 503: busy"),
                     ("destination up", None, None),
                     ("messages dead-lettered", 1, "HTTP 400: no such event")]
    assert {getattr(r, "destination", None) for r in caplog.records
            if r.levelno >= logging.INFO} == {"hook"}


def test_dead_letters_counted_after_the_last_line_are_logged_when_the_worker_stops(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker,
        caplog: pytest.LogCaptureFixture) -> None:
    receiver.reply(400)
    with caplog.at_level(logging.INFO, "trackd.destinations"):
        worker = make_worker(destination(url=receiver.url))
        for n in (1, 2, 3):  # the first line at once, the next two counted for a minute
            harness.append([message("u", n)])
            eventually(lambda: worker.ledger.counts().get("dead") == n)  # noqa: B023
        harness.stop(worker)
    counts = [getattr(r, "messages", None) for r in caplog.records
              if r.msg == "messages dead-lettered"]
    assert counts == [1, 2]


def test_messages_of_one_anonymous_user_wait_behind_its_retried_one(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    # No userId: the anonymousId is the user, whose messages go in order one at a time.
    receiver.script(Reply(503))
    worker = make_worker(destination(url=receiver.url, concurrency=4))
    sent = harness.append([message(None, n, anonymousId="a1") for n in range(3)])
    eventually(lambda: worker.ledger.counts() == {"delivered": 3})
    assert receiver.accepted_ids() == sent


def test_dead_letters_keep_their_event_name_for_a_replay_of_one_event(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    receiver.reply(400)
    worker = make_worker(destination(url=receiver.url))
    clicked = harness.append([message("u", 0, event="Clicked")])
    harness.append([message("u", 1, event="Viewed"), message("u", 2, kind="identify")])
    eventually(lambda: worker.ledger.counts() == {"dead": 3})
    assert [m for _, _, m, _ in worker.ledger.dead_letters(event="Clicked")] == clicked
