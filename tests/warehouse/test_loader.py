"""The loader on a real log (LogWriter) and a real DuckDB file: layout, types, merges, dedup."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import eventually
from tests.warehouse.conftest import Log, Warehouse, enriched
from trackd.errors import ConfigError
from trackd.log.reader import LogReader
from trackd.log.records import Entry
from trackd.observability import Registry
from trackd.settings import WarehouseSettings
from trackd.warehouse.db import Database
from trackd.warehouse.loader import WarehouseFailing, WarehouseLoader
from trackd.warehouse.lookup import WarehouseLookup
from trackd.warehouse.query import WarehouseQueryEngine

MakeWarehouse = Callable[..., Warehouse]


def test_calls_land_in_the_segment_layout_with_typed_columns(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    log.write([
        enriched("track", messageId="t1", userId="u1", event="Order Completed",
                 properties={"revenue": 19.99, "quantity": 2, "coupon": "SPRING",
                             "paid": True, "shippedAt": "2024-05-02T08:00:00Z",
                             "product": {"sku": "A-1"}, "tags": ["a", "b"]},
                 context={"ip": "10.0.0.1", "page": {"url": "https://x.test/cart"},
                          "library": {"name": "analytics-python", "version": "2.4.0"}},
                 channel="server"),
        enriched("identify", messageId="i1", userId="u1", traits={"email": "a@x.test"}),
        enriched("page", messageId="p1", anonymousId="a1", name="Home",
                 properties={"title": "Welcome"}),
        enriched("screen", messageId="s1", anonymousId="a1", name="Main"),
        enriched("group", messageId="g1", userId="u1", groupId="acme",
                 traits={"employees": 50}),
        enriched("alias", messageId="al1", userId="u1", previousId="a1"),
        enriched("track", source="backend", messageId="b1", userId="u9", event="Signed Up"),
    ])
    w = make_warehouse()
    assert w.loader.load_available() == 7

    assert {r[0] for r in w.rows("SELECT DISTINCT table_schema FROM information_schema.tables "
                                 "WHERE table_schema NOT IN ('_trackd', 'main')")} == {
        "web", "backend"}
    web = {r[0] for r in w.rows("SELECT table_name FROM information_schema.tables "
                                "WHERE table_schema = 'web'")}
    assert web == {"tracks", "order_completed", "identifies", "users", "pages", "screens",
                   "groups", "accounts", "aliases"}
    columns = w.columns("web", "order_completed")
    assert {k: columns[k] for k in (
        "id", "user_id", "anonymous_id", "received_at", "sent_at", "timestamp",
        "original_timestamp", "uuid_ts", "event", "event_text", "context_ip",
        "context_page_url", "context_library_name", "channel", "revenue", "quantity",
        "coupon", "paid", "shipped_at", "product_sku", "tags")} == {
        "id": "VARCHAR", "user_id": "VARCHAR", "anonymous_id": "VARCHAR",
        "received_at": "TIMESTAMP", "sent_at": "TIMESTAMP", "timestamp": "TIMESTAMP",
        "original_timestamp": "TIMESTAMP", "uuid_ts": "TIMESTAMP", "event": "VARCHAR",
        "event_text": "VARCHAR", "context_ip": "VARCHAR", "context_page_url": "VARCHAR",
        "context_library_name": "VARCHAR", "channel": "VARCHAR", "revenue": "DOUBLE",
        "quantity": "BIGINT", "coupon": "VARCHAR", "paid": "BOOLEAN",
        "shipped_at": "TIMESTAMP", "product_sku": "VARCHAR", "tags": "VARCHAR"}
    (row,) = w.dicts("SELECT * FROM web.order_completed")
    assert row["id"] == "t1" and row["event"] == "order_completed"
    assert row["event_text"] == "Order Completed"
    assert row["received_at"] == datetime(2024, 5, 1, 10, 0)
    assert row["shipped_at"] == datetime(2024, 5, 2, 8, 0)
    assert (row["revenue"], row["quantity"], row["paid"]) == (19.99, 2, True)
    assert row["tags"] == '["a","b"]' and row["product_sku"] == "A-1"
    assert "revenue" not in w.columns("web", "tracks")
    assert w.rows("SELECT id, event FROM web.tracks") == [("t1", "order_completed")]
    assert w.rows("SELECT name, title FROM web.pages") == [("Home", "Welcome")]
    assert w.rows("SELECT name FROM web.screens") == [("Main",)]
    assert w.rows("SELECT group_id, employees FROM web.groups") == [("acme", 50)]
    assert w.rows("SELECT id, employees FROM web.accounts") == [("acme", 50)]
    assert w.rows("SELECT previous_id, user_id FROM web.aliases") == [("a1", "u1")]
    assert w.rows("SELECT id, email FROM web.users") == [("u1", "a@x.test")]
    assert "anonymous_id" not in w.columns("web", "users")
    assert w.rows("SELECT id FROM backend.signed_up") == [("b1",)]
    assert w.metric("trackd_warehouse_messages_loaded_total") == 7
    freshness = w.metrics.snapshot()["trackd_warehouse_freshness_seconds"]["values"]
    [(_, row)] = freshness  # per bucket counts, then sum and count: one per message loaded
    assert row[-1] == 7 and sum(row[:-2]) <= 7


def test_a_value_of_another_type_is_cast_or_kept_in_type_conflicts(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    w = make_warehouse()
    log.write([enriched("track", messageId="c1", userId="u", event="Paid",
                        properties={"amount": 10, "note": "first"})])
    w.loader.load_available()
    log.write([
        enriched("track", messageId="c2", userId="u", event="Paid",
                 properties={"amount": "lots", "note": 5}),
        enriched("track", messageId="c3", userId="u", event="Paid",
                 properties={"amount": "42", "extra": [1]}),
        enriched("track", messageId="c4", userId="u", event="Paid",
                 properties={"amount": 7.0}),
    ])
    assert w.loader.load_available() == 3
    rows = w.rows("SELECT id, amount, note, extra, _type_conflicts FROM web.paid ORDER BY id")
    assert rows == [
        ("c1", 10, "first", None, None),
        ("c2", None, "5", None, '{"amount":"lots"}'),
        ("c3", 42, None, "[1]", None),
        ("c4", 7, None, None, None),
    ]
    assert w.columns("web", "paid")["_type_conflicts"] == "JSON"
    assert w.columns("web", "paid")["amount"] == "BIGINT"
    assert w.rows("SELECT _type_conflicts->>'amount' FROM web.paid WHERE id = 'c2'") == [
        ("lots",)]
    assert w.metric("trackd_warehouse_type_conflicts_total") == 1


def test_users_merge_traits_over_several_identifies(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    w = make_warehouse()
    steps = [
        {"email": "ann@x.test", "plan": "free", "age": 30},
        {"plan": "pro", "company": {"name": "Acme"}},
        {"age": None},
        {"age": "unknown"},
    ]
    for traits in steps:  # one batch each: merges across transactions
        log.write([enriched("identify", userId="ann", anonymousId="anon-1", traits=traits)])
        w.loader.load_available()
    (ann,) = w.dicts("SELECT * FROM web.users")
    assert ann["id"] == "ann"
    assert ann["email"] == "ann@x.test"  # omitted later: kept
    assert ann["plan"] == "pro"  # overwritten
    assert ann["company_name"] == "Acme"
    assert ann["age"] is None  # explicit null, then a conflicting value
    assert json.loads(ann["_type_conflicts"]) == {"age": "unknown"}
    assert "anonymous_id" not in ann
    # A value that fits again clears the conflict. Several identifies in one batch merge too.
    log.write([enriched("identify", userId="ann", traits={"age": 31}),
               enriched("identify", userId="bob", traits={"plan": "free", "role": "admin"}),
               enriched("identify", userId="bob", traits={"plan": None, "seats": 3},
                        received_at="2024-05-01T10:05:00.000Z")])
    w.loader.load_available()
    assert w.rows("SELECT id, age, plan, seats, role, _type_conflicts FROM web.users "
                  "ORDER BY id") == [
        ("ann", 31, "pro", None, None, None), ("bob", None, None, 3, "admin", None)]
    assert w.rows("SELECT received_at FROM web.users WHERE id = 'bob'") == [
        (datetime(2024, 5, 1, 10, 5),)]  # the last identify's
    assert w.rows("SELECT count(*) FROM web.users u JOIN web.identifies i "
                  "ON i.user_id = u.id AND i.uuid_ts = u.uuid_ts WHERE u.id = 'bob'") == [(2,)]
    # "unknown" for age: one row with a type conflict in identifies, one in users.
    assert w.metric("trackd_warehouse_type_conflicts_total") == 2
    assert w.rows("SELECT count(*) FROM web.identifies") == [(7,)]


def test_accounts_merge_group_traits(log: Log, make_warehouse: MakeWarehouse) -> None:
    w = make_warehouse()
    log.write([enriched("group", userId="u", groupId="acme", traits={"name": "Acme", "size": 5})])
    w.loader.load_available()
    log.write([enriched("group", userId="u", groupId="acme", traits={"size": 6})])
    w.loader.load_available()
    assert w.rows("SELECT id, name, size FROM web.accounts") == [("acme", "Acme", 6)]


def test_new_columns_and_tables_appear_as_data_needs_them(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    w = make_warehouse()
    log.write([enriched("track", userId="u", event="Clicked", properties={"a": 1})])
    w.loader.load_available()
    assert "b" not in w.columns("web", "clicked")
    log.write([enriched("track", userId="u", event="Clicked", properties={"b": "x", "c": None}),
               enriched("track", userId="u", event="Viewed")])
    w.loader.load_available()
    assert w.columns("web", "clicked")["b"] == "VARCHAR"
    assert "c" not in w.columns("web", "clicked")  # no column before a non-null value
    assert w.rows("SELECT a, b FROM web.clicked ORDER BY a NULLS LAST") == [(1, None), (None, "x")]
    assert w.rows("SELECT count(*) FROM web.viewed") == [(1,)]


def test_duplicates_are_skipped_counted_and_explained(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    w = make_warehouse()
    log.write([enriched("track", messageId="dup", userId="u", event="E", properties={"v": 1}),
               enriched("track", messageId="dup", userId="u", event="E", properties={"v": 2})])
    w.loader.load_available()
    log.write([enriched("track", messageId="dup", userId="u", event="E", properties={"v": 3}),
               enriched("track", source="backend", messageId="dup", userId="u", event="E")])
    w.loader.load_available()
    assert w.rows("SELECT id, v FROM web.e") == [("dup", 1)]
    assert w.rows("SELECT count(*) FROM web.tracks") == [(1,)]
    assert w.rows("SELECT count(*) FROM backend.tracks") == [(1,)]  # dedup is per source
    assert w.metric("trackd_warehouse_duplicates_total") == 2
    answer = WarehouseLookup(w.database, ["web", "backend"]).lookup("dup")
    assert answer["found"] is True
    assert {(x["schema"], x["table"]) for x in answer["loaded"]} == {
        ("web", "tracks"), ("web", "e"), ("backend", "tracks"), ("backend", "e")}
    assert len(answer["duplicates"]) == 2
    first = next(x for x in answer["loaded"] if x["schema"] == "web")
    assert all(d["schema"] == "web" and d["duplicateOf"]["loadedAt"] == first["loadedAt"]
               for d in answer["duplicates"])
    assert WarehouseLookup(w.database, ["web"]).lookup("nope")["found"] is False


def test_dedup_survives_a_restart(log: Log, make_warehouse: MakeWarehouse) -> None:
    w = make_warehouse()
    log.write([enriched("identify", messageId="same", userId="u", traits={"plan": "a"})])
    w.loader.load_available()
    w = make_warehouse()  # closes the database and opens it again
    log.write([enriched("identify", messageId="same", userId="u", traits={"plan": "b"})])
    assert w.loader.load_available() == 1
    assert w.rows("SELECT plan FROM web.identifies") == [("a",)]
    assert w.rows("SELECT plan FROM web.users") == [("a",)]
    assert w.rows("SELECT count(*) FROM _trackd.duplicates") == [(1,)]


def test_the_dedup_window_spans_tables_and_a_table_never_repeats_an_id(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    w = make_warehouse(dedup_window_days=7)
    log.write([enriched("track", messageId="x", userId="u", event="E",
                        received_at="2024-05-01T00:00:00.000Z")])
    log.write([
        # Within the window, another call type with the same id is a duplicate.
        enriched("page", messageId="x", userId="u", received_at="2024-05-07T00:00:00.000Z"),
        # Past the window: the same table still refuses it...
        enriched("track", messageId="x", userId="u", event="E",
                 received_at="2024-06-01T00:00:00.000Z"),
        # ...another table takes it.
        enriched("screen", messageId="x", userId="u", received_at="2024-06-01T00:00:00.000Z"),
    ])
    w.loader.load_available()
    assert w.rows("SELECT count(*) FROM web.tracks") == [(1,)]
    assert w.rows("SELECT count(*) FROM web.screens") == [(1,)]
    assert w.rows("SELECT count(*) FROM information_schema.tables WHERE table_name = 'pages'"
                  ) == [(0,)]
    assert w.rows("SELECT tables FROM _trackd.messages") == [(["e", "screens", "tracks"],)]
    assert w.metric("trackd_warehouse_duplicates_total") == 2


def test_position_lives_in_duckdb_and_is_mirrored_to_the_log(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    log.write([enriched("track", userId="u", event="A") for _ in range(5)], shard_name="gw0")
    log.write([enriched("track", userId="u", event="A") for _ in range(3)], shard_name="gw1")
    w = make_warehouse(batch_rows=2)
    assert w.loader.load_available() == 8
    assert dict(w.rows('SELECT shard, "offset" FROM _trackd.offsets')) == {"gw0": 5, "gw1": 3}
    assert w.reader.position("warehouse") == {"gw0": 5, "gw1": 3}
    assert w.reader.lag("warehouse") == 0
    # The log's copy lost (as after a crash between the two commits): DuckDB's wins.
    w.reader._offsets.execute("DELETE FROM offsets WHERE consumer = 'warehouse'")
    w = make_warehouse(batch_rows=2)
    assert w.reader.position("warehouse") == {"gw0": 5, "gw1": 3}
    assert w.loader.load_available() == 0
    assert w.rows("SELECT count(*) FROM web.a") == [(8,)]


def test_a_message_that_cannot_be_loaded_is_recorded_and_the_rest_loads(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    good = [enriched("track", userId="u", event="Ok") for _ in range(5)]
    log.write(good[:2])
    log.append([Entry("web", "broken-1", "track", "2024-05-01T10:00:00.000Z", b"{not json")])
    log.write(good[2:])
    w = make_warehouse()
    w.expect_batch_failures()  # the broken message fails its batch until it is alone
    assert w.loader.load_available() == 6
    assert w.rows("SELECT count(*) FROM web.ok") == [(5,)]
    (error,) = w.rows("SELECT message_id, error FROM _trackd.load_errors")
    assert error[0] == "broken-1" and "JSON" in error[1]
    answer = WarehouseLookup(w.database, ["web"]).lookup("broken-1")
    assert answer["found"] is True and answer["failed"][0]["schema"] == "web"
    assert w.metric("trackd_warehouse_load_errors_total") == 1


def test_profile_events_are_pruned_after_14_days_but_identifies_stay(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    w = make_warehouse()
    log.write([enriched("track", userId="u", event="Old", received_at="2024-01-01T00:00:00Z"),
               enriched("identify", userId="u", received_at="2024-01-01T00:00:00Z"),
               enriched("track", userId="u", event="New", received_at="2024-01-20T00:00:00Z")])
    w.loader.load_available()
    w.loader.clock = lambda: datetime(2024, 1, 21)
    w.loader._last_prune = -1e9
    w.loader.load_once()
    assert sorted(w.rows("SELECT type FROM _trackd.events")) == [("identify",), ("track",)]
    assert w.rows("SELECT count(*) FROM web.old") == [(1,)]  # the warehouse keeps everything


_CHILD = """
import sys
from pathlib import Path
from trackd.log.reader import LogReader
from trackd.observability import Registry
from trackd.settings import WarehouseSettings
from trackd.warehouse.db import Database
from trackd.warehouse.loader import WarehouseFailing, WarehouseLoader

root = Path(sys.argv[1])
loader = WarehouseLoader(WarehouseSettings(batch_rows=int(sys.argv[2])),
                         Database(root / "warehouse.duckdb"), LogReader(root / "log"), Registry())
loader.open()
loader.load_available()
"""


def test_kill_9_in_the_middle_of_loading_loses_nothing_and_loads_nothing_twice(
        tmp_path: Path, log: Log, make_warehouse: MakeWarehouse) -> None:
    total = 6000
    log.write([enriched("track", userId=f"u{i % 50}", event="Bulk", properties={"i": i})
               for i in range(total)])
    reader = LogReader(tmp_path / "log")
    progress = [0]
    try:
        for _ in range(3):  # kill -9 three times, each time somewhere in the backlog
            child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path), "150"])
            try:
                eventually(lambda: sum(reader.position("warehouse").values()) > progress[0],
                           interval=0.005)
                # Not a synchronisation: a random moment of the next batch to die in.
                time.sleep(random.uniform(0, 0.05))
            finally:
                child.kill()
                child.wait()
            progress[0] = sum(reader.position("warehouse").values())
            assert progress[0] < total, "the backlog should outlast the child"
    finally:
        reader.close()
    w = make_warehouse(batch_rows=150)
    w.loader.load_available()
    assert w.rows("SELECT count(*), count(DISTINCT id), count(DISTINCT i), min(i), max(i) "
                  "FROM web.bulk") == [(total, total, total, 0, total - 1)]
    assert w.rows("SELECT count(*), count(DISTINCT id) FROM web.tracks") == [(total, total)]
    assert w.rows("SELECT count(*) FROM _trackd.messages") == [(total,)]
    assert w.rows("SELECT count(*) FROM _trackd.duplicates") == [(0,)]
    assert dict(w.rows('SELECT shard, "offset" FROM _trackd.offsets')) == {"gw0": total}


def test_the_stage_loads_in_its_own_thread_and_closes_on_stop(tmp_path: Path, log: Log) -> None:
    reader = LogReader(tmp_path / "log")
    database = Database(tmp_path / "warehouse.duckdb")
    loader = WarehouseLoader(WarehouseSettings(poll_interval=0.02), database, reader, Registry())
    engine = WarehouseQueryEngine(database)

    async def scenario() -> None:
        await loader.start()
        try:
            await asyncio.to_thread(
                log.write, [enriched("track", userId="u", event="Live") for _ in range(3)])
            await asyncio.to_thread(eventually, lambda: engine.query(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'live'"
            ).rows == [(1,)] and engine.query("SELECT count(*) FROM web.live").rows == [(3,)])
        finally:
            await loader.stop()

    try:
        asyncio.run(scenario())
        assert not database.is_open
        assert reader.position("warehouse") == {"gw0": 3}
    finally:
        reader.close()


def test_the_stage_refuses_to_start_on_a_file_it_cannot_open(tmp_path: Path) -> None:
    (tmp_path / "warehouse.duckdb").mkdir()
    reader = LogReader(tmp_path / "log")
    loader = WarehouseLoader(WarehouseSettings(), Database(tmp_path / "warehouse.duckdb"),
                             reader, Registry())
    try:
        with pytest.raises(ConfigError, match="cannot open the warehouse"):
            asyncio.run(loader.start())
    finally:
        reader.close()


def test_a_failing_warehouse_writes_nothing_off_and_catches_up_when_it_works_again(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    log.write([enriched("track", userId="u", event="Ok") for _ in range(4)])
    w = make_warehouse()
    w.expect_batch_failures()
    con = w.database.writer()
    con.execute("ALTER TABLE _trackd.messages RENAME TO messages_away")  # every load fails
    with pytest.raises(WarehouseFailing, match="cannot load even a plain message") as failing:
        w.loader.load_once()
    cause = failing.value.__cause__  # the message's own error, named in the text
    assert cause is not None and f"({type(cause).__name__}: {cause}); retrying" in str(
        failing.value)
    assert w.rows("SELECT count(*) FROM _trackd.load_errors") == [(0,)]
    con.execute("ALTER TABLE _trackd.messages_away RENAME TO messages")
    assert w.loader.load_available() == 4
    assert w.rows("SELECT count(*) FROM web.ok") == [(4,)]
    assert w.rows("SELECT count(*) FROM information_schema.tables "
                  "WHERE table_name = 'trackd_canary'") == [(0,)]  # the canary left nothing
