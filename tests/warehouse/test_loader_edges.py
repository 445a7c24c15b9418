"""The loader's edges found by mutation testing of warehouse/loader.py (docs/testing.md): a
message written off last moves the position with it after its exact retries, a stop during a
read gives the records back and fails the jobs waiting, a first round that fails is retried
with a growing backoff, a backlog never waits the poll interval, a job waits for the records
read before it, reads shrink while records wait, and the settings (dedup window, batch size)
and the clock (UTC) are kept as given."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import eventually
from tests.warehouse.conftest import Log, Warehouse, enriched, run_loader_until
from trackd.log.reader import LogReader
from trackd.log.records import Entry, Position, Record
from trackd.observability import Registry
from trackd.settings import WarehouseSettings
from trackd.warehouse.db import Database
from trackd.warehouse.feed import Feed
from trackd.warehouse.loader import Stopping, WarehouseLoader, utcnow
from trackd.warehouse.schedule import TABLE_COST, Schedule
from trackd.warehouse.store import Store

MakeWarehouse = Callable[..., Warehouse]
WRITTEN_OFF = "message could not be loaded; recorded in _trackd.load_errors"


def test_a_message_written_off_last_saves_the_position_past_it_and_is_not_read_again(
        log: Log, make_warehouse: MakeWarehouse, caplog: pytest.LogCaptureFixture) -> None:
    log.write([enriched("track", messageId="ok-1", userId="u", event="Ok")])
    log.append([Entry("web", "broken-1", "track", "2024-05-01T10:00:00.000Z", b"{not json")])
    w = make_warehouse()
    w.expect_batch_failures()  # the broken message fails its batch until it is alone
    with caplog.at_level(logging.WARNING, "trackd.warehouse"):
        assert w.loader.load_available() == 2
    # The pair fails 3 times, is halved; "ok-1" loads, "broken-1" fails its 3 times alone.
    assert w.batch_failures() == 6
    failed = [r.__dict__ for r in caplog.records if r.getMessage() == "warehouse batch failed"]
    assert [(f["records"], f["attempt"]) for f in failed] == [
        (2, 1), (2, 2), (2, 3), (1, 1), (1, 2), (1, 3)]
    assert all("JSON" in f["error"] for f in failed)
    # The write-off and the position past it are one transaction: nothing is left to read.
    assert dict(w.rows('SELECT shard, "offset" FROM _trackd.offsets')) == {"gw0": 2}
    assert w.reader.position("warehouse") == {"gw0": 2}
    (error,) = w.rows('SELECT message_id, shard, "offset", error FROM _trackd.load_errors')
    assert error[:3] == ("broken-1", "gw0", 2)
    kind, _, text = error[3].partition(": ")  # "<exception type>: <its text>"
    assert kind.isidentifier() and kind != "NoneType" and "JSON" in text
    (line,) = [r for r in caplog.records if r.getMessage() == WRITTEN_OFF]
    assert (line.__dict__["message_id"], line.__dict__["error"]) == ("broken-1", text)
    w = make_warehouse()  # a restart reads nothing again
    assert w.loader.load_available() == 0
    assert w.rows("SELECT count(*) FROM _trackd.load_errors") == [(1,)]
    assert w.rows("SELECT id FROM web.ok") == [("ok-1",)]


class HeldRead:
    """The loader's feed, holding the first read that returns records until `go` is set; it
    keeps the records given back (`failed`)."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.reading = threading.Event()
        self.go = threading.Event()
        self.given_back: list[str] = []
        self.acknowledged: list[str] = []

    def open(self, position: Position) -> None:
        self.feed.open(position)

    def read(self, limit: int, position: Position) -> list[Record]:
        records = self.feed.read(limit, position)
        if records and not self.go.is_set():
            self.reading.set()
            assert self.go.wait(30)
        return records

    def done(self, records: list[Record], position: Position) -> None:
        self.acknowledged += [r.message_id for r in records]
        self.feed.done(records, position)

    def failed(self, records: list[Record]) -> None:
        self.given_back += [r.message_id for r in records]
        self.feed.failed(records)

    def close(self) -> None:
        self.feed.close()


def test_a_stop_during_a_read_gives_the_records_back_and_fails_the_jobs_waiting(
        tmp_path: Path, log: Log, make_warehouse: MakeWarehouse) -> None:
    ids = ["m1", "m2", "m3"]
    log.write([enriched("track", messageId=i, userId="u", event="Held") for i in ids])
    reader = LogReader(tmp_path / "log")
    database = Database(tmp_path / "warehouse.duckdb")
    loader = WarehouseLoader(WarehouseSettings(poll_interval=0.02), database, reader, Registry())
    assert loader.feed is not None
    feed = loader.feed = HeldRead(loader.feed)
    ran: list[Store] = []

    async def scenario() -> concurrent.futures.Future[None]:
        await loader.start()
        assert await asyncio.to_thread(feed.reading.wait, 30)
        job = loader.submit(ran.append)  # queued behind the read: never run
        stopping = asyncio.create_task(loader.stop())
        await asyncio.to_thread(eventually, loader._stop.is_set)
        feed.go.set()
        await stopping
        await loader.stop()  # a second stop has nothing left to do
        return job

    try:
        job = asyncio.run(scenario())
        assert not database.is_open
        assert feed.given_back == ids and feed.acknowledged == []
        assert ran == []
        with pytest.raises(Stopping, match="^the warehouse loader stopped$"):
            job.result(timeout=0)
        assert not reader.position("warehouse")
    finally:
        reader.close()
    w = make_warehouse()  # the next start loads them, once
    assert w.loader.load_available() == 3
    assert w.rows("SELECT id FROM web.held ORDER BY id") == [(i,) for i in ids]
    assert w.rows("SELECT count(*) FROM _trackd.duplicates") == [(0,)]


def test_a_first_round_that_fails_is_retried_after_the_first_backoff_then_twice_as_long(
        tmp_path: Path, log: Log, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    log.write([enriched("track", userId="u", event="Later")])
    reader = LogReader(tmp_path / "log")
    database = Database(tmp_path / "warehouse.duckdb")
    loader = WarehouseLoader(WarehouseSettings(poll_interval=0.02), database, reader, Registry())
    read = reader.read
    failures: list[int] = []

    def read_failing_first(*args: Any, **kwargs: Any) -> Any:
        if len(failures) < 2:
            failures.append(1)
            raise OSError("the log's disk hiccuped")
        return read(*args, **kwargs)

    monkeypatch.setattr(reader, "read", read_failing_first)

    def loaded() -> bool:
        with database.reading() as cursor:
            return bool(cursor.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'later'"
            ).fetchone() == (1,))

    try:
        with caplog.at_level(logging.ERROR, "trackd.warehouse"):
            asyncio.run(run_loader_until(loader, loaded))
        assert reader.position("warehouse") == {"gw0": 1}
    finally:
        reader.close()
    assert failures == [1, 1]
    lines = [r for r in caplog.records if r.getMessage() == "warehouse load failed; retrying"]
    assert [r.__dict__["in"] for r in lines] == [0.5, 1.0]
    assert all(r.exc_info is not None for r in lines)


def test_a_backlog_loads_round_after_round_without_waiting_the_poll_interval(
        tmp_path: Path, log: Log) -> None:
    # Full rounds (and the exact batch size) never wait: with a 10-minute poll interval the
    # backlog of 3 batches would stall after the first.
    log.write([enriched("track", userId="u", event="Backlog") for _ in range(6)])
    reader = LogReader(tmp_path / "log")
    database = Database(tmp_path / "warehouse.duckdb")
    loader = WarehouseLoader(WarehouseSettings(poll_interval=600, batch_rows=2), database,
                             reader, Registry())

    try:  # the stop wakes the poll wait
        asyncio.run(run_loader_until(loader, lambda: reader.position("warehouse") == {"gw0": 6}))
    finally:
        reader.close()


def one_new_table_a_round(w: Warehouse) -> None:
    """The schedule's budget is one new table: a read of new events loads one a round."""
    w.loader.schedule = Schedule(w.loader.catalog, w.loader.settings.max_tables_per_source,
                                 budget=TABLE_COST)


def test_a_job_runs_only_once_every_record_read_before_it_is_committed(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    # A deletion must not be followed by a record of its subject the loader still held.
    log.write([enriched("track", userId="u", event=f"Kind {i}") for i in range(5)])
    w = make_warehouse()
    one_new_table_a_round(w)
    first = w.loader.load_once()
    (committed,), = w.rows("SELECT count(*) FROM _trackd.messages")
    assert 0 < committed < 5 and first == committed  # the others wait in the loader
    seen = w.loader.submit(lambda store: (store.position(), store))
    assert w.loader.load_once() == 5 - committed  # over several transactions before the job
    position, store = seen.result(timeout=0)
    assert position == {"gw0": 5} and store is w.loader.store
    assert w.rows("SELECT count(*) FROM _trackd.messages") == [(5,)]


def reads_round_by_round(w: Warehouse) -> list[tuple[int, int | None]]:
    """Load until nothing is left, one new table a round; returns each round's (records
    waiting, the limit of its read or None when it read nothing)."""
    one_new_table_a_round(w)
    loader = w.loader
    assert loader.feed is not None
    feed = loader.feed
    limits: list[int] = []
    read = feed.read

    def read_counted(limit: int, position: Position) -> list[Record]:
        limits.append(limit)
        return read(limit, position)

    feed.read = read_counted  # type: ignore[method-assign]
    rounds: list[tuple[int, int | None]] = []
    while True:
        waiting, asked = len(loader._pending), len(limits)
        if loader.load_once() == 0 and not loader._pending:
            return rounds
        rounds.append((waiting, limits[asked] if len(limits) > asked else None))


def test_reads_shrink_while_records_wait_and_stop_at_twice_a_batch(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    # batch_rows 8: a read takes what makes the waiting up to 8, at least 8 // 4, and nothing
    # once 16 wait, so the records held in memory stay bounded.
    total = 40
    log.write([enriched("track", userId="u", event=f"Kind {i}") for i in range(total)])
    w = make_warehouse(batch_rows=8)
    rounds = reads_round_by_round(w)
    assert all(limit == (max(8 - waiting, 2) if waiting < 16 else None)
               for waiting, limit in rounds), rounds
    waited = {waiting for waiting, _ in rounds}
    assert {0, 16} <= waited and waited & set(range(1, 6)) and waited & set(range(6, 16))
    assert max(waited) < 18
    assert w.rows("SELECT count(*), count(DISTINCT id) FROM web.tracks") == [(total, total)]
    assert w.reader.position("warehouse") == {"gw0": total}


def test_with_a_small_batch_a_read_takes_one_record_while_others_wait(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    # batch_rows 4, whose quarter is 1: with 3 records waiting a read takes one more, so when
    # one record loads a round the records held stay at 3.
    log.write([enriched("track", userId="u", event=f"Kind {i}") for i in range(10)])
    w = make_warehouse(batch_rows=4)
    rounds = reads_round_by_round(w)
    assert rounds[:3] == [(0, 4), (3, 1), (3, 1)], rounds
    assert max(waiting for waiting, _ in rounds) == 3
    assert w.rows("SELECT count(*), count(DISTINCT id) FROM web.tracks") == [(10, 10)]


def test_a_dedup_window_under_a_day_is_kept_as_set(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    log.write([enriched("track", messageId="x", userId="u", event="E",
                        received_at="2024-05-01T00:00:00.000Z"),
               # another table, 11 hours on: within the half day, a duplicate
               enriched("page", messageId="x", userId="u", received_at="2024-05-01T11:00:00Z"),
               # 13 hours on: past it, loaded
               enriched("screen", messageId="x", userId="u", received_at="2024-05-01T13:00:00Z")])
    w = make_warehouse(dedup_window_days=0.5)
    w.loader.load_available()
    assert w.rows("SELECT count(*) FROM web.screens") == [(1,)]
    assert w.rows("SELECT type FROM _trackd.duplicates") == [("page",)]


def test_a_batch_of_one_row_loads_one_record_a_round(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    log.write([enriched("track", userId="u", event="Single") for _ in range(3)])
    w = make_warehouse(batch_rows=1)
    assert [w.loader.load_once() for _ in range(4)] == [1, 1, 1, 0]


def test_the_loaders_clock_is_utc_on_a_machine_in_another_zone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # loaded_at, uuid_ts and the pruning cutoff are UTC, whatever the machine's zone.
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    try:
        now = utcnow()
        assert now.tzinfo is None
        assert abs(now - datetime.now(UTC).replace(tzinfo=None)) < timedelta(hours=1)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_thread_setup_runs_in_the_loader_thread_before_the_database_opens(
        tmp_path: Path, log: Log) -> None:
    # The composition root lowers the loader thread's priority there: it must run in the
    # thread that then does every write, once, before the file is opened.
    log.write([enriched("track", userId="u", event="Setup")])
    reader = LogReader(tmp_path / "log")
    database = Database(tmp_path / "warehouse.duckdb")
    setups: list[tuple[int, bool]] = []
    loader = WarehouseLoader(
        WarehouseSettings(poll_interval=0.02), database, reader, Registry(),
        thread_setup=lambda: setups.append((threading.get_ident(), database.is_open)))

    async def scenario() -> int:
        await loader.start()
        try:
            await asyncio.to_thread(eventually, lambda: reader.position("warehouse") == {
                "gw0": 1})
            return await asyncio.wrap_future(loader.submit(lambda _: threading.get_ident()))
        finally:
            await loader.stop()

    try:
        writer = asyncio.run(scenario())
    finally:
        reader.close()
    assert setups == [(writer, False)] and writer != threading.get_ident()


def test_stopping_a_stage_that_never_started_does_nothing(tmp_path: Path, log: Log) -> None:
    reader = LogReader(tmp_path / "log")
    database = Database(tmp_path / "warehouse.duckdb")
    loader = WarehouseLoader(WarehouseSettings(), database, reader, Registry())
    try:
        asyncio.run(loader.stop())
    finally:
        reader.close()
    assert not database.is_open
