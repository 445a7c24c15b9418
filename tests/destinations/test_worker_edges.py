"""The destination worker at its edges, each found by mutation testing (docs/testing.md): what
the metrics count, a stored message that is not JSON, an intake that fails once, pruning."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest

from tests.conftest import eventually
from tests.destinations.conftest import destination
from tests.destinations.harness import LogHarness, fail_once, message
from tests.destinations.receiver import Receiver, Reply
from trackd.destinations.worker import DestinationWorker
from trackd.log.records import Entry
from trackd.observability import render

MakeWorker = Callable[..., DestinationWorker]


def metric(harness: LogHarness, name: str) -> float:
    values = dict((tuple(k), v) for k, v in harness.metrics.snapshot()[name]["values"])
    return float(values.get(("hook",), 0))


def test_a_failed_batch_is_retried_whole_and_counted_in_messages(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    # Batches of 3: one 500 (3 messages retried), then a 400 (the same 3 dead).
    receiver.script(Reply(500), Reply(400))
    worker = make_worker(destination(url=receiver.url, batch_size=3, linger=3600))
    harness.append([message("u1", n) for n in range(3)])
    eventually(lambda: worker.ledger.counts() == {"dead": 3})
    # The retry is one request of the same 3 (one jitter for the request, not one each).
    assert [len(r.messages()) for r in receiver.requests] == [3, 3]
    # The counters move just after the ledger write: wait for them, then check them all.
    eventually(lambda: metric(harness, "trackd_destination_dead_total") >= 1)
    assert metric(harness, "trackd_destination_retried_total") == 3
    assert metric(harness, "trackd_destination_dead_total") == 3
    assert metric(harness, "trackd_destination_delivered_total") == 0
    text = render([harness.metrics.snapshot()])
    assert 'trackd_destination_retried_total{destination="hook"} 3' in text
    assert 'trackd_destination_dead_total{destination="hook"} 3' in text


def test_messages_of_another_source_are_skipped_counted_and_the_metrics_name_the_destination(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    # Two skipped in one read (one commit): counted as 2 messages, not as 1 read.
    worker = make_worker(destination(url=receiver.url, sources=["backend"]))
    harness.append([message("u1", 0), message("u2", 2)], source="web")
    sent = harness.append([message("u1", 1)], source="backend")
    eventually(lambda: worker.ledger.counts() == {"skipped": 2, "delivered": 1})
    assert receiver.accepted_ids() == sent
    eventually(lambda: metric(harness, "trackd_destination_delivered_total") == 1
               and metric(harness, "trackd_destination_skipped_total") == 2)
    text = render([harness.metrics.snapshot()])
    assert 'trackd_destination_skipped_total{destination="hook"} 2' in text
    assert 'trackd_destination_delivered_total{destination="hook"} 1' in text
    assert 'trackd_destination_lag{destination="hook"} 0' in text


def test_a_stored_message_that_is_not_json_is_skipped_with_why_and_the_rest_delivered(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    worker = make_worker(destination(url=receiver.url))
    at = "2024-05-01T12:00:00.000Z"
    harness.run(harness.writer().append([Entry("web", "not-json", "track", at, b"\xff{")]))
    sent = harness.append([message("u1", 0)])
    eventually(lambda: worker.ledger.counts() == {"skipped": 1, "delivered": 1})
    [row] = worker.ledger.find("not-json")
    assert (row["source"], row["state"]) == ("web", "skipped")
    assert row["error"] == "stored message is not a JSON object"
    assert receiver.accepted_ids() == sent


def test_an_intake_that_fails_once_goes_on_after_its_pause(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    failures = fail_once(monkeypatch, harness.reader, "read", OSError("disk hiccup"))
    with caplog.at_level(logging.ERROR, "trackd.destinations"):
        make_worker(destination(url=receiver.url))
        sent = harness.append([message("u1", 0)])
        eventually(lambda: receiver.accepted_ids() == sent)
    assert len(failures) == 1
    assert "destination intake failed; retrying" in caplog.text


def test_delivered_rows_older_than_the_retention_are_pruned_at_start(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    # Rows delivered 8 days, 7 days and 3 seconds, and 6 days before `now`; a retention of 7
    # days keeps only the last. Clocks of the test's own: the edge is seconds wide.
    now, day = time.time(), 86400.0
    at = [now - 8 * day]
    old = make_worker(destination(url=receiver.url), clock=lambda: at[0])
    sent: list[str] = []
    for n, when in enumerate([now - 8 * day, now - 7 * day - 3, now - 6 * day]):
        at[0] = when
        sent += harness.append([message("u1", n)])
        eventually(lambda: old.ledger.counts() == {"delivered": n + 1})  # noqa: B023
    harness.stop(old)
    again = make_worker(destination(url=receiver.url, ledger_retention_days=7),
                        clock=lambda: now)
    eventually(lambda: again.ledger.counts() == {"delivered": 1})
    assert [again.ledger.find(m) != [] for m in sent] == [False, False, True]


def test_a_snapshot_after_stop_leaves_the_gauge_and_logs_no_error(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker,
        caplog: pytest.LogCaptureFixture) -> None:
    worker = make_worker(destination(url=receiver.url))
    sent = harness.append([message("u1", 0)])
    eventually(lambda: receiver.accepted_ids() == sent)
    harness.stop(worker)
    with caplog.at_level(logging.ERROR):
        snapshot = harness.metrics.snapshot()
    assert "metrics collector failed" not in caplog.text
    assert dict((tuple(k), v) for k, v in snapshot["trackd_destination_lag"]["values"]) in (
        {}, {("hook",): 0})


def test_a_partial_batch_of_two_lingers_for_the_second_message_without_errors(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker,
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, "trackd.destinations"):
        worker = make_worker(destination(url=receiver.url, batch_size=2, linger=3600))
        first = harness.append([message("u1", 0)])
        eventually(lambda: worker.ledger.active() == 1)
        time.sleep(0.3)  # not a wait for the right answer: a chance for a wrong one to send
        second = harness.append([message("u2", 1)])
        eventually(lambda: len(receiver.accepted_ids()) == 2)
    assert [sorted(m["messageId"] for m in r.messages()) for r in receiver.requests] == [
        sorted(first + second)]
    assert "dispatch failed" not in caplog.text


def test_the_worker_moves_the_log_position_of_the_consumer_named_after_its_destination(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    # `destination:<name>` is the consumer that trimming waits for and the status shows: its
    # position, not another name's, covers what the worker took.
    make_worker(destination(url=receiver.url))
    sent = harness.append([message("u1", 0), message("u2", 1)])
    eventually(lambda: sorted(receiver.accepted_ids()) == sorted(sent))
    assert harness.reader.lag("destination:hook") == 0
