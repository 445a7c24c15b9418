"""The destination worker's lag gauge and its shared log (NATS), found by mutation testing
(docs/testing.md): records the intake left in the log count in the lag, and on a shared
consumer a record is acknowledged once its row is delivered, skipped or dead-lettered, and
held (counted once) while it is retried."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import eventually
from tests.destinations.conftest import destination
from tests.destinations.harness import LogHarness, message
from tests.destinations.receiver import Received, Receiver, Reply
from tests.destinations.test_worker_edges import metric
from tests.log.natsd import (
    MACHINE_NATS,
    delete_stream,
    free_port,
    machine_nats_up,
    unique_stream,
)
from trackd.destinations import ledger_dir
from trackd.destinations.ledger import Ledger, ledger_path
from trackd.destinations.senders import build_sender
from trackd.destinations.worker import DestinationWorker
from trackd.log.jetstream import JetStreamLog
from trackd.log.records import Entry
from trackd.settings import LogSettings

MakeWorker = Callable[..., DestinationWorker]


def lag(harness: LogHarness) -> float | None:
    values = dict((tuple(k), v)
                  for k, v in harness.metrics.snapshot()["trackd_destination_lag"]["values"])
    return values.get(("hook",))


def test_the_lag_counts_the_records_the_intake_left_in_the_log(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    # The ledger takes 2 (max_backlog) and the log keeps 3 until the destination catches up.
    receiver.reply(503)
    worker = make_worker(destination(url=receiver.url, max_attempts=1000),
                         read_limit=2, max_backlog=2)
    harness.append([message(f"u{n}", n) for n in range(5)])
    eventually(lambda: worker.ledger.active() == 2 and harness.reader.lag(worker.name) == 3)
    assert lag(harness) == 5
    time.sleep(0.3)  # not a wait for the right answer: a chance for the intake to read more
    assert (worker.ledger.active(), harness.reader.lag(worker.name)) == (2, 3)


@pytest.fixture
def nats_log(harness: LogHarness) -> Iterator[JetStreamLog]:
    if not machine_nats_up():
        pytest.skip("no NATS server on 127.0.0.1:4222")
    stream = unique_stream()
    log = JetStreamLog(LogSettings(url=MACHINE_NATS, stream=stream))
    harness.run(log.start())
    yield log
    harness.run(log.close())
    delete_stream(stream)


def test_on_a_shared_log_a_record_is_acknowledged_once_its_row_is_done_and_held_meanwhile(
        tmp_path: Path, harness: LogHarness, receiver: Receiver,
        nats_log: JetStreamLog) -> None:
    def answer(request: Received) -> Reply | None:
        user = request.messages()[0].get("userId")
        return Reply(503) if user == "retried" else Reply(400) if user == "dead" else None

    receiver.rule = answer
    settings = destination(url=receiver.url, sources=["web"], max_attempts=1000)
    ledger = Ledger(ledger_path(ledger_dir(tmp_path), settings.name))
    worker = DestinationWorker(settings, nats_log, ledger, build_sender(settings),
                               harness.metrics)
    harness.start(worker)
    sent = {user: message(user) for user in ("delivered", "retried", "dead", "skipped")}
    at = sent["delivered"]["receivedAt"]
    harness.run(nats_log.append([
        Entry("backend" if user == "skipped" else "web", m["messageId"], "track", at,
              json.dumps(m).encode())
        for user, m in sent.items()]))
    eventually(lambda: ledger.counts() == {"delivered": 1, "retrying": 1, "dead": 1,
                                           "skipped": 1})
    # Only the retried record is still unacknowledged in the log: held, and counted once.
    eventually(lambda: harness.run(nats_log.lag(worker.name)) == 1)
    eventually(lambda: lag(harness) == 1)
    assert metric(harness, "trackd_destination_skipped_total") == 1
    receiver.rule = None
    eventually(lambda: ledger.counts() == {"delivered": 2, "dead": 1, "skipped": 1})
    eventually(lambda: harness.run(nats_log.lag(worker.name)) == 0)
    eventually(lambda: lag(harness) == 0)
    assert receiver.accepted_ids() == [sent["delivered"]["messageId"],
                                       sent["retried"]["messageId"]]


def test_on_a_shared_log_a_destination_that_starts_at_new_gets_only_what_follows(
        tmp_path: Path, harness: LogHarness, receiver: Receiver,
        nats_log: JetStreamLog) -> None:
    def append(m: dict[str, object]) -> None:
        harness.run(nats_log.append([Entry("web", str(m["messageId"]), "track",
                                           str(m["receivedAt"]), json.dumps(m).encode())]))

    append(message("u", 0))  # before the destination exists: `trackd replay` sends it
    settings = destination(url=receiver.url)
    ledger = Ledger(ledger_path(ledger_dir(tmp_path), settings.name))
    harness.start(DestinationWorker(settings, nats_log, ledger, build_sender(settings),
                                    harness.metrics, start_at="new"))
    later = message("u", 1)
    append(later)
    eventually(lambda: ledger.counts() == {"delivered": 1})
    assert receiver.accepted_ids() == [later["messageId"]]


def test_a_worker_whose_nats_log_is_not_there_yet_says_so_and_counts_no_lag(
        tmp_path: Path, harness: LogHarness, receiver: Receiver,
        caplog: pytest.LogCaptureFixture) -> None:
    # Nothing listens on the port: the worker starts anyway (its intake keeps trying), logs
    # why, and its lag is what its ledger holds (nothing), not a guess about the log.
    unreachable = JetStreamLog(LogSettings(url=f"nats://127.0.0.1:{free_port()}",
                                           stream=unique_stream()))
    harness.run(unreachable.start())
    settings = destination(url=receiver.url)
    ledger = Ledger(ledger_path(ledger_dir(tmp_path), settings.name))
    worker = DestinationWorker(settings, unreachable, ledger, build_sender(settings),
                               harness.metrics)
    try:
        with caplog.at_level(logging.WARNING, "trackd.destinations"):
            harness.start(worker)
        [line] = [r for r in caplog.records
                  if r.getMessage() == "destination cannot reach the log yet"]
        assert getattr(line, "destination", None) == "hook"
        assert str(getattr(line, "error", "")).startswith("NATS is unreachable")
        assert lag(harness) == 0
    finally:
        try:
            harness.stop(worker)
        finally:
            harness.run(unreachable.close())
