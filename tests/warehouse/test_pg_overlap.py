"""Overlap across batches on PostgreSQL: batch N commits on the store's thread while the loader
flattens batch N+1. Dedup sees N's ledger before it commits, nothing is acknowledged before its
COMMIT, and a refused COMMIT drops N+1 too, both loading later exactly once. Each test has a
database of its own on the machine's PostgreSQL (127.0.0.1:5432)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import eventually
from tests.warehouse import pg
from tests.warehouse.conftest import Log, enriched
from trackd.log.reader import LogReader
from trackd.log.records import Position, Record
from trackd.observability import Registry
from trackd.settings import WarehouseSettings
from trackd.warehouse.db import Database
from trackd.warehouse.feed import Feed
from trackd.warehouse.ledger import Loaded
from trackd.warehouse.loader import WarehouseLoader
from trackd.warehouse.postgres.store import PgStore
from trackd.warehouse.store import Store


@pytest.fixture
def url() -> Iterator[str]:
    with pg.database() as found:
        yield found


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as con:
        return [tuple(r) for r in con.execute(sql).fetchall()]


class CheckedFeed:
    """The loader's feed, checking at each acknowledgement that PostgreSQL has committed the
    records acknowledged (read on a connection of its own, so only committed rows count)."""

    def __init__(self, feed: Feed, url: str) -> None:
        self.feed, self.url = feed, url
        self.acknowledged: list[str] = []
        self.early: list[str] = []  # acknowledged before their COMMIT

    def open(self, position: Position) -> None:
        self.feed.open(position)

    def read(self, limit: int, position: Position) -> list[Record]:
        return self.feed.read(limit, position)

    def done(self, records: list[Record], position: Position) -> None:
        committed = {r[0] for r in rows(self.url, (
            "SELECT message_id FROM _trackd.messages "
            "UNION SELECT message_id FROM _trackd.duplicates"))}
        self.early += [r.message_id for r in records if r.message_id not in committed]
        self.acknowledged += [r.message_id for r in records]
        self.feed.done(records, position)

    def failed(self, records: list[Record]) -> None:
        self.feed.failed(records)

    def close(self) -> None:
        self.feed.close()


def make_loader(store: Store | Database, log_dir: Path, url: str = "",
                batch_rows: int = 3) -> tuple[WarehouseLoader, Registry]:
    metrics = Registry()
    loader = WarehouseLoader(WarehouseSettings(batch_rows=batch_rows), store,
                             LogReader(log_dir), metrics, retry_delay=0.0)
    if url:
        assert loader.feed is not None
        loader.feed = CheckedFeed(loader.feed, url)
    loader.open()
    return loader, metrics


def failures(metrics: Registry) -> float:
    return float(sum(v for _, v in metrics.snapshot()[
        "trackd_warehouse_batch_failures_total"]["values"]))


def tracks(ids: list[str]) -> list[dict[str, Any]]:
    return [enriched("track", messageId=i, userId="u", event="Clicked") for i in ids]


class HeldStore(PgStore):
    """Signals when the second batch's dedup lookup (`find`) ran."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.finds = 0
        self.second_find = threading.Event()

    def find(self, keys: Any) -> dict[int, Loaded]:
        found = super().find(keys)
        self.finds += 1
        if self.finds == 2:
            self.second_find.set()
        return found


def test_a_repeat_in_the_next_batch_is_a_duplicate_while_the_first_still_commits(
        url: str, tmp_path: Path) -> None:
    # Batches of 3: "m1" again in the second, read and judged while the first is held
    # uncommitted (a session locks the table its transaction writes last).
    Log(tmp_path / "log").write(tracks(["m1", "m2", "m3", "m1", "m4", "m5"]))
    store = HeldStore(url)
    loader, metrics = make_loader(store, tmp_path / "log", url)
    held = psycopg.connect(url)
    held.execute("LOCK TABLE _trackd.offsets IN ACCESS EXCLUSIVE MODE")
    thread = threading.Thread(target=loader.load_available)
    thread.start()
    try:
        assert store.second_find.wait(30), "the second batch was never judged"
        assert rows(url, "SELECT count(*) FROM _trackd.messages") == [(0,)]  # first: held
    finally:
        held.rollback()
        held.close()
        thread.join(30)
    store.close()
    assert not thread.is_alive()
    assert rows(url, "SELECT id FROM web.tracks ORDER BY id") == [
        ("m1",), ("m2",), ("m3",), ("m4",), ("m5",)]
    duplicates = "SELECT message_id, type, shard, \"offset\" FROM _trackd.duplicates"
    assert rows(url, duplicates) == [("m1", "track", "gw0", 4)]
    assert failures(metrics) == 0
    assert isinstance(loader.feed, CheckedFeed)
    assert loader.feed.early == []
    assert sorted(loader.feed.acknowledged) == ["m1", "m1", "m2", "m3", "m4", "m5"]
    # ... as DuckDB records it
    duck = Database(tmp_path / "warehouse.duckdb")
    on_duck, _ = make_loader(duck, tmp_path / "log")
    on_duck.load_available()
    with duck.reading() as cur:
        assert cur.execute(duplicates).fetchall() == [("m1", "track", "gw0", 4)]
    duck.close()


def test_a_refused_commit_drops_the_next_batch_too_and_both_load_later_once(
        url: str, tmp_path: Path) -> None:
    Log(tmp_path / "log").write(tracks([f"m{i}" for i in range(1, 10)]))
    store = PgStore(url)
    loader, metrics = make_loader(store, tmp_path / "log", url)
    # PostgreSQL refuses the first COMMIT after this (a deferred constraint trigger; the
    # sequence counts outside transactions, so only that one fails).
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("CREATE SEQUENCE public.commits")
        con.execute("""CREATE FUNCTION public.refuse_once() RETURNS trigger AS $$
            BEGIN
                IF nextval('public.commits') = 1 THEN RAISE EXCEPTION 'refused'; END IF;
                RETURN NULL;
            END $$ LANGUAGE plpgsql""")
        con.execute("CREATE CONSTRAINT TRIGGER refuse AFTER INSERT OR UPDATE ON "
                    "_trackd.offsets DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
                    "EXECUTE FUNCTION public.refuse_once()")
    assert loader.load_available() == 9
    store.close()
    assert isinstance(loader.feed, CheckedFeed)
    assert loader.feed.early == []
    assert sorted(loader.feed.acknowledged) == [f"m{i}" for i in range(1, 10)]
    assert rows(url, "SELECT count(*), count(DISTINCT id) FROM web.tracks") == [(9, 9)]
    assert rows(url, "SELECT count(*) FROM _trackd.duplicates") == [(0,)]
    assert rows(url, "SELECT count(*) FROM _trackd.load_errors") == [(0,)]
    assert rows(url, "SELECT \"offset\" FROM _trackd.offsets") == [(9,)]
    assert failures(metrics) == 1
    # the first two batches were started once each after the refusal, the third once
    assert rows(url, "SELECT last_value FROM public.commits") == [(4,)]


def test_a_stop_with_a_batch_committing_acknowledges_it_once_committed(
        url: str, tmp_path: Path) -> None:
    Log(tmp_path / "log").write(tracks([f"m{i}" for i in range(1000)]))
    store = HeldStore(url)
    reader = LogReader(tmp_path / "log")
    loader = WarehouseLoader(WarehouseSettings(batch_rows=200), store, reader, Registry())
    assert loader.feed is not None
    checked = loader.feed = CheckedFeed(loader.feed, url)
    made = PgStore(url)
    made.open()  # trackd's tables, to lock one
    made.close()
    held = psycopg.connect(url)
    # Writes to the position wait (reads do not): the first batch's COMMIT waits for the lock
    # while the second is read and judged.
    held.execute("LOCK TABLE _trackd.offsets IN SHARE MODE")

    async def scenario() -> None:
        await loader.start()
        assert await asyncio.to_thread(store.second_find.wait, 30)
        stopping = asyncio.create_task(loader.stop())
        await asyncio.to_thread(eventually, loader._stop.is_set)
        held.rollback()
        await stopping

    try:
        asyncio.run(scenario())
    finally:
        held.close()
    # Both batches in flight committed on the way out, and were acknowledged then, not before.
    assert rows(url, 'SELECT shard, "offset" FROM _trackd.offsets') == [("gw0", 400)]
    assert reader.position("warehouse") == {"gw0": 400}
    assert checked.early == []
    assert len(checked.acknowledged) == 400
    again, _ = make_loader(PgStore(url), tmp_path / "log", batch_rows=200)
    again.load_available()
    again.store.close()
    reader.close()
    assert rows(url, "SELECT count(*), count(DISTINCT id) FROM web.tracks") == [(1000, 1000)]
    assert rows(url, "SELECT count(*) FROM _trackd.duplicates") == [(0,)]


def test_a_commit_that_always_fails_for_one_message_retries_each_dropped_batch_its_own_count(
        url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # "p2" and "p5" are refused at every COMMIT (a deferred trigger on the ledger): the first
    # batch fails while the second waits on it, both are dropped, and each is loaded again the
    # careful way: the first has had its first attempt, the second none.
    Log(tmp_path / "log").write(tracks(["m1", "p2", "m3", "m4", "p5"]))
    store = PgStore(url)
    loader, metrics = make_loader(store, tmp_path / "log", url)
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("""CREATE FUNCTION public.refuse_p() RETURNS trigger AS $$
            BEGIN
                IF NEW.message_id LIKE 'p%' THEN RAISE EXCEPTION 'refused'; END IF;
                RETURN NULL;
            END $$ LANGUAGE plpgsql""")
        con.execute("CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON _trackd.messages "
                    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
                    "EXECUTE FUNCTION public.refuse_p()")
    with caplog.at_level(logging.WARNING, "trackd.warehouse"):
        assert loader.load_available() == 5
    store.close()
    assert [(r.__dict__["records"], r.__dict__["attempt"]) for r in caplog.records
            if r.getMessage() == "warehouse batch failed"] == [
        (3, 1), (3, 2), (3, 3),  # the first batch: its COMMIT, then two more tries
        (2, 1), (2, 2), (2, 3), (1, 1), (1, 2), (1, 3),  # its halves: m1 loads; p2, m3; p2
        (2, 1), (2, 2), (2, 3), (1, 1), (1, 2), (1, 3)]  # the second: m4 loads; p5
    assert failures(metrics) == 15
    assert isinstance(loader.feed, CheckedFeed)
    assert loader.feed.early == ["p2", "p5"]  # committed in load_errors, not in the ledger
    assert sorted(loader.feed.acknowledged) == ["m1", "m3", "m4", "p2", "p5"]
    assert rows(url, "SELECT id FROM web.tracks ORDER BY id") == [("m1",), ("m3",), ("m4",)]
    assert rows(url, 'SELECT message_id, "offset" FROM _trackd.load_errors ORDER BY 2') == [
        ("p2", 2), ("p5", 5)]
    assert rows(url, "SELECT \"offset\" FROM _trackd.offsets") == [(5,)]
    reader = LogReader(tmp_path / "log")  # mirrored to the log with the last batch
    try:
        assert reader.position("warehouse") == {"gw0": 5}
    finally:
        reader.close()
