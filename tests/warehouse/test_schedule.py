"""One source's schema work does not hold back the others (`trackd.warehouse.schedule`): cheap
sources commit first, a heavy source's new tables come in bounded chunks, and the log position
never passes a record that is not committed, so a crash between chunks loses and repeats no row.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from tests.warehouse.conftest import Log, Warehouse, enriched
from trackd.log.records import Record
from trackd.warehouse import schedule
from trackd.warehouse.catalog import Catalog
from trackd.warehouse.schedule import BUDGET, TABLE_COST, Schedule

MakeWarehouse = Callable[..., Warehouse]
EVENTS = 4 * BUDGET // TABLE_COST  # new event tables: four chunks' worth


def _write_hostile_then_canary(log: Log) -> None:
    log.write([enriched("track", userId="attacker", event=f"e{i}") for i in range(EVENTS)])
    log.write([enriched("track", source="backend", userId="u", event="Canary",
                        messageId="canary")])


def _saved_position(w: Warehouse) -> int:
    return int(w.rows("SELECT \"offset\" FROM _trackd.offsets WHERE shard = 'gw0'")[0][0])


def test_a_canary_commits_before_another_sources_schema_work_and_the_position_waits(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    _write_hostile_then_canary(log)
    w = make_warehouse()
    committed = w.loader.load_once()  # one round: the canary's source, then one chunk of web's
    assert w.rows("SELECT id FROM backend.tracks") == [("canary",)]
    loaded = {offset for (offset,) in w.rows(
        "SELECT \"offset\" FROM _trackd.events WHERE source = 'web'")}
    assert 0 < len(loaded) < EVENTS
    assert committed == 1 + len(loaded)  # both transactions counted
    # The canary's record comes after all of web's; the position stays before the first web
    # record not committed (the next read starts there).
    first_waiting = min(set(range(1, EVENTS + 1)) - loaded)
    assert _saved_position(w) == first_waiting - 1
    # Each chunk is its own transaction: the canary's (loaded_at) is the earliest.
    order = w.rows("SELECT source, min(loaded_at) FROM _trackd.messages GROUP BY source "
                   "ORDER BY 2")
    assert [source for source, _ in order] == ["backend", "web"]

    w.loader.load_available()
    assert w.rows("SELECT count(*), count(DISTINCT id) FROM web.tracks") == [(EVENTS, EVENTS)]
    tables = w.rows("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'web'")
    assert tables == [(EVENTS + 1,)]  # the events' tables and tracks
    assert _saved_position(w) == EVENTS + 1
    assert w.metric("trackd_warehouse_duplicates_total") == 0


def test_a_crash_between_chunks_neither_loses_nor_repeats_a_row(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    _write_hostile_then_canary(log)
    w = make_warehouse()
    w.loader.load_once()
    # A crash: what the loader held in memory is gone; a new one starts from the database.
    w = make_warehouse()
    w.loader.load_available()
    assert w.rows("SELECT count(*), count(DISTINCT id) FROM web.tracks") == [(EVENTS, EVENTS)]
    assert w.rows("SELECT count(*) FROM backend.tracks") == [(1,)]
    assert w.rows("SELECT count(*) FROM backend.canary") == [(1,)]
    assert w.rows("SELECT count(*), count(DISTINCT message_id) FROM _trackd.messages") == [
        (EVENTS + 1, EVENTS + 1)]
    # The canary, committed ahead of the position, was read again and dropped by the ledger.
    assert w.rows("SELECT source, message_id FROM _trackd.duplicates") == [
        ("backend", "canary")]


def test_a_read_with_little_schema_work_loads_in_one_transaction(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    log.write([enriched("track", source=source, userId="u", event=f"Event {i % 5}",
                        properties={"n": i, "plan": "pro"})
               for i in range(300) for source in ("web", "backend", "ios")])
    w = make_warehouse()
    assert w.loader.load_once() == 900
    assert w.rows("SELECT count(DISTINCT loaded_at), count(*) FROM _trackd.messages") == [
        (1, 900)]


def test_a_stop_while_records_wait_and_the_warehouse_fails_ends_the_loader(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    """Records read and waiting for a later round must not keep a stopping loader alive when
    the warehouse fails (it retried forever: `trackd serve` could not stop)."""
    _write_hostile_then_canary(log)
    w = make_warehouse()
    w.expect_batch_failures()
    w.loader.load_once()  # web's later chunks now wait
    w.database.close()  # the warehouse goes away
    asyncio.run(w.loader.stop())  # no thread runs here: this only asks the loop to stop
    loop = threading.Thread(target=w.loader._loop, daemon=True)
    loop.start()
    loop.join(30)
    assert not loop.is_alive(), "the stopping loader kept retrying"


def test_property_names_past_the_estimates_memo_still_count_and_it_stays_bounded(
        log: Log, make_warehouse: MakeWarehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    # The estimate remembers the names of the keys it saw; keys come from the messages, so
    # the memo is bounded: a source sending ever new property names is still estimated right
    # (its new columns hold it back behind the canary) and the memo does not grow.
    monkeypatch.setattr(schedule, "_MEMO", 16)
    monkeypatch.setattr(schedule, "_JOINED", {})  # not what earlier tests left (module-wide)
    monkeypatch.setattr(schedule, "_COLUMNS", {})
    monkeypatch.setattr(schedule, "_SHAPES", {})
    log.write([enriched("track", userId="u", event="Wide",
                        properties={f"Prop{i}x{k}": k for k in range(BUDGET // 4)})
               for i in range(8)])  # twice the budget's new columns
    log.write([enriched("track", source="backend", userId="u", event="Canary",
                        messageId="canary")])
    w = make_warehouse()
    w.loader.load_once()
    assert w.rows("SELECT id FROM backend.tracks") == [("canary",)]
    assert 0 < w.rows("SELECT count(*) FROM web.wide")[0][0] < 8
    assert len(schedule._JOINED) <= 16
    assert all(len(columns) <= 16 for columns in schedule._COLUMNS.values())
    assert len(schedule._SHAPES) <= 16
    w.loader.load_available()
    assert w.rows("SELECT count(*) FROM web.wide") == [(8,)]


def test_the_estimate_tells_records_of_one_shape_from_those_with_a_value_or_an_object_more(
        ) -> None:
    # Records shaped like one estimated before add no schema work; a property that was null
    # and now has a value, or now holds an object, is a new column.
    bodies = [b'{"event":"E","properties":{"a":null}}', b'{"event":"E","properties":{"a":null}}',
              b'{"event":"E","properties":{"a":1}}', b'{"event":"E","properties":{"a":{"b":1}}}']
    records = [Record("gw0", i + 1, "web", f"m{i}", "track", "2024-01-01T00:00:00.000Z", body)
               for i, body in enumerate(bodies)]
    # the new table `e` is all the first two cost; `a` costs one column, `a_b` one more
    now, later = Schedule(Catalog(), 100, budget=TABLE_COST).split(records)
    assert (now, later) == ([records[:2]], records[2:])
    now, later = Schedule(Catalog(), 100, budget=TABLE_COST + 1).split(records)
    assert (now, later) == ([records[:3]], records[3:])
    now, later = Schedule(Catalog(), 100, budget=TABLE_COST + 2).split(records)
    assert (now, later) == ([records], [])


def test_a_context_nested_as_deep_as_json_allows_is_loaded(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    # The gateway bounds the nesting of properties and traits, not of context: a write key can
    # send one nested ~900 levels (the JSON decoder's limit is about 1000). The estimate looks
    # at objects only as deep as the columns go, so it neither recurses into all of it nor
    # holds the message (or the messages after it) back.
    deep: dict[str, object] = {"leaf": 1}
    for _ in range(900):
        deep = {"n": deep}
    log.write([enriched("track", userId="u", event="Deep", messageId="deep",
                        context={"ip": "10.0.0.1", "deep": deep})])
    log.write([enriched("track", userId="u", event="After", messageId="after")])
    w = make_warehouse()
    w.loader.load_available()
    assert w.rows("SELECT id FROM web.tracks ORDER BY id") == [("after",), ("deep",)]
    assert w.rows("SELECT count(*) FROM _trackd.load_errors") == [(0,)]
