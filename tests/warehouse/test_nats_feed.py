"""The warehouse loader on the NATS log: records it keeps waiting are not delivered again.

The machine's NATS server (127.0.0.1:4222), a stream of the test's own, a real DuckDB file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from tests.log.natsd import MACHINE_NATS, delete_stream, machine_nats_up, unique_stream
from tests.log.test_conformance import run
from tests.warehouse.conftest import enriched, run_loader_until
from trackd.log.jetstream import JetStreamLog
from trackd.log.records import Entry, Violation
from trackd.observability import Registry
from trackd.settings import LogSettings, WarehouseSettings
from trackd.warehouse.db import Database
from trackd.warehouse.feed import ConsumerFeed
from trackd.warehouse.loader import WarehouseLoader
from trackd.warehouse.schedule import TABLE_COST, Schedule

pytestmark = pytest.mark.skipif(not machine_nats_up(), reason="no NATS server on 127.0.0.1:4222")

ACK_WAIT = 2.0
NEW_TABLES = 80  # one new event table per round: the last waits ~80 reads (>= 50 ms each)


@pytest.fixture
def stream() -> Iterator[str]:
    name = unique_stream()
    yield name
    delete_stream(name)


def entry(message: dict[str, object]) -> Entry:
    return Entry(str(message.pop("_source")), str(message["messageId"]), str(message["type"]),
                 str(message["receivedAt"]), msgspec.json.encode(message))


async def load_all(log: JetStreamLog, loader: WarehouseLoader, entries: list[Entry]) -> int:
    """Append `entries`, then drive `loader` as its thread does, in a thread of its own, until
    nothing is left to read or waits for a later round; every record read is acknowledged.
    Closes the loader's store and `log`; returns the records loaded."""
    loader.feed = feed = ConsumerFeed(log, asyncio.get_running_loop())
    try:
        await log.append(entries)
        await asyncio.to_thread(loader.open)
        loaded = await asyncio.to_thread(loader.load_available)
        assert await log.lag("warehouse") == 0
        return loaded
    finally:
        await asyncio.to_thread(feed.close)
        await asyncio.to_thread(loader.store.close)
        await log.close()


def test_records_waiting_for_later_rounds_longer_than_ack_wait_are_loaded_once(
        stream: str, tmp_path: Path) -> None:
    """A hostile source's new event tables load one per round (the schedule's budget is one
    table), so its last records wait in the loader for several times `ack_wait`: the loader
    holds them, JetStream does not deliver them again, and no duplicate is recorded."""
    hostile = [enriched("track", source="hostile", event=f"new event {i}", properties={"n": i})
               for i in range(NEW_TABLES)]
    cheap = [enriched("track", source="web", event="Signed Up", properties={"plan": "pro"})
             for _ in range(20)]
    messages = hostile + cheap
    expected = len(messages)
    database = Database(tmp_path / "warehouse.duckdb")
    metrics = Registry()

    def count(name: str) -> float:
        return float(sum(v for _, v in metrics.snapshot()[name]["values"]))

    async def body() -> None:
        log = JetStreamLog(LogSettings(url=MACHINE_NATS, stream=stream, ack_wait_s=ACK_WAIT))
        await log.start()
        loader = WarehouseLoader(WarehouseSettings(poll_interval=0.05), database, log, metrics,
                                 retry_delay=0.0)
        loader.schedule = Schedule(loader.catalog, loader.settings.max_tables_per_source,
                                   budget=TABLE_COST)
        await load_all(log, loader, [entry(dict(m)) for m in messages])

    run(body, timeout=180.0)
    assert count("trackd_warehouse_messages_loaded_total") == expected
    assert count("trackd_warehouse_duplicates_total") == 0
    assert count("trackd_warehouse_batch_failures_total") == 0
    reopened = Database(tmp_path / "warehouse.duckdb", read_only=True)
    reopened.open()
    try:
        with reopened.reading() as cur:
            assert cur.execute("SELECT count(*) FROM _trackd.duplicates").fetchall() == [(0,)]
            ids = cur.execute("SELECT source, message_id FROM _trackd.messages").fetchall()
            tracked = cur.execute(
                "SELECT count(*), count(DISTINCT id) FROM hostile.tracks").fetchall()
    finally:
        reopened.close()
    assert sorted(ids) == sorted((str(m["_source"]), str(m["messageId"])) for m in messages)
    assert tracked == [(NEW_TABLES, NEW_TABLES)]


def test_the_started_stage_loads_messages_and_their_violations_from_nats(
        stream: str, tmp_path: Path) -> None:
    """`start` makes the NATS feeds itself (the messages' and the violations'), on its loop."""
    messages = [enriched("track", event="Played", userId="u", properties={"n": i})
                for i in range(3)]
    violations = [Violation("web", str(m["messageId"]), str(m["receivedAt"]), "track", "Played",
                            "type_mismatch", "properties.n", "rule", "why", 1, "flag")
                  for m in messages]
    database = Database(tmp_path / "warehouse.duckdb")

    def loaded() -> bool:
        with database.reading() as cur:
            tables = {r[0] for r in cur.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'web'"
            ).fetchall()}
            if not {"played", "_violations"} <= tables:
                return False
            return bool(cur.execute("SELECT count(*) FROM web.played").fetchall() == [(3,)]
                        and cur.execute("SELECT count(*) FROM web._violations").fetchall()
                        == [(3,)])

    async def body() -> None:
        log = JetStreamLog(LogSettings(url=MACHINE_NATS, stream=stream, ack_wait_s=ACK_WAIT))
        await log.start()
        loader = WarehouseLoader(WarehouseSettings(poll_interval=0.05), database, log,
                                 Registry(), retry_delay=0.0)
        try:
            await log.append([entry(dict(m)) for m in messages], (), violations)
            await run_loader_until(loader, loaded)
        finally:
            await log.close()

    run(body, timeout=120.0)
    assert not database.is_open


def test_a_message_written_off_on_nats_is_acknowledged_with_its_batch(
        stream: str, tmp_path: Path) -> None:
    """A batch that fails to load is split until the broken message is alone and written off;
    the whole batch, the broken message included, is then acknowledged: nothing is left
    pending in the consumer to be delivered and written off again."""
    good = enriched("track", messageId="ok-1", userId="u", event="Ok")
    database = Database(tmp_path / "warehouse.duckdb")

    async def body() -> None:
        log = JetStreamLog(LogSettings(url=MACHINE_NATS, stream=stream, ack_wait_s=ACK_WAIT))
        await log.start()
        loader = WarehouseLoader(WarehouseSettings(poll_interval=0.05), database, log,
                                 Registry(), retry_delay=0.0)
        assert await load_all(log, loader, [entry(dict(good)), Entry(
            "web", "broken-1", "track", "2024-05-01T10:00:00.000Z", b"{not json")]) == 2

    run(body, timeout=120.0)
    reopened = Database(tmp_path / "warehouse.duckdb", read_only=True)
    reopened.open()
    try:
        with reopened.reading() as cur:
            assert cur.execute("SELECT id FROM web.ok").fetchall() == [("ok-1",)]
            assert cur.execute(
                "SELECT message_id FROM _trackd.load_errors").fetchall() == [("broken-1",)]
    finally:
        reopened.close()
