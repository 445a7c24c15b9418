"""Dedup at its edges, found by mutation testing of the batch (docs/testing.md): the window's
exact end, a messageId loaded again (after the window) twice in one batch, whose ledger row
kept only one of the two new tables, so a later copy filled a table a second time, and two
messageIds sharing one 63-bit key (a hash collision: forced, as none is known)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from tests.warehouse.conftest import Log, Warehouse, enriched
from trackd.log.records import Record
from trackd.warehouse import ledger
from trackd.warehouse.batch import Batch
from trackd.warehouse.catalog import Catalog
from trackd.warehouse.values import parse_timestamp

MakeWarehouse = Callable[..., Warehouse]


def test_a_copy_received_exactly_one_window_later_is_a_duplicate(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    w = make_warehouse(dedup_window_days=7)
    log.write([enriched("track", messageId="x", userId="u", event="E",
                        received_at="2024-05-01T00:00:00.000Z")])
    w.loader.load_available()
    log.write([
        # Another call type at the window's very end: still within it.
        enriched("page", messageId="x", userId="u", received_at="2024-05-08T00:00:00.000Z"),
        # A millisecond later: past it, so its own table takes it.
        enriched("screen", messageId="x", userId="u", received_at="2024-05-08T00:00:00.001Z"),
    ])
    w.loader.load_available()
    assert w.rows("SELECT count(*) FROM information_schema.tables WHERE table_name = 'pages'"
                  ) == [(0,)]
    assert w.rows("SELECT id FROM web.screens") == [("x",)]
    assert w.rows("SELECT type FROM _trackd.duplicates") == [("page",)]
    assert w.metric("trackd_warehouse_duplicates_total") == 1


def test_copies_in_one_batch_after_a_reload_are_judged_against_every_table_loaded(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    w = make_warehouse(dedup_window_days=7)
    log.write([
        enriched("track", messageId="x", userId="u", event="E",
                 received_at="2024-05-01T00:00:00.000Z"),
        # Past the window, another table: loaded again, into screens.
        enriched("screen", messageId="x", userId="u", received_at="2024-06-01T00:00:00.000Z"),
        # The same table again: a duplicate, however late.
        enriched("screen", messageId="x", userId="u", received_at="2024-06-02T00:00:00.000Z"),
        enriched("track", messageId="x", userId="u", event="E",
                 received_at="2024-06-03T00:00:00.000Z"),
        # A third table: loaded, and the ledger row lists all of them.
        enriched("page", messageId="x", userId="u", received_at="2024-07-01T00:00:00.000Z"),
    ])
    assert w.loader.load_available() == 5
    assert w.rows("SELECT count(*) FROM web.tracks") == [(1,)]
    assert w.rows("SELECT received_at FROM web.screens")[0][0].month == 6
    assert w.rows("SELECT count(*) FROM web.screens") == [(1,)]
    assert w.rows("SELECT count(*) FROM web.pages") == [(1,)]
    # Both reloads of the batch are in the ledger row (an update with one of them only lost
    # the other's table)...
    assert w.rows("SELECT tables FROM _trackd.messages") == [
        (["e", "pages", "screens", "tracks"],)]
    assert w.rows("SELECT type FROM _trackd.duplicates ORDER BY received_at") == [
        ("screen",), ("track",)]
    assert w.metric("trackd_warehouse_duplicates_total") == 2
    # ...so a later batch still finds each table taken, however late it comes.
    log.write([enriched(kind, messageId="x", userId="u", received_at="2024-09-01T00:00:00.000Z")
               for kind in ("screen", "page")])
    assert w.loader.load_available() == 2
    assert w.rows("SELECT count(*) FROM web.screens UNION ALL SELECT count(*) FROM web.pages"
                  ) == [(1,), (1,)]
    assert w.metric("trackd_warehouse_duplicates_total") == 4


def test_a_message_whose_key_another_has_is_loaded_and_its_own_copies_are_duplicates() -> None:
    now = datetime(2024, 5, 2)
    batch = Batch(Catalog(), timedelta(days=7), now)
    sent = [("a", "track"), ("b", "track"), ("b", "page")]  # one key: a and b collide
    records = [Record("gw0", i, "web", message_id, kind, f"2024-05-01T10:00:0{i}.000Z", b"{}")
               for i, (message_id, kind) in enumerate(sent)]
    batch.judge({}, records, [7] * len(records))
    assert batch.loaded == Counter({"web": 2})  # a, and b: another message
    assert batch.reloaded == 0
    # b's page copy repeats b (within the window), not a.
    assert batch.duplicates == Counter({"web": 1})
    b_at, page_at = (parse_timestamp(r.received_at) for r in records[1:])
    assert batch.duplicate_rows == [("web", "b", "page", page_at, now, b_at, now, "gw0", 2)]


def test_a_message_whose_key_another_has_ends_in_load_errors_never_dropped(
        log: Log, make_warehouse: MakeWarehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger cannot hold both under one key: the second's insert fails, and the
    retry-and-split records it in _trackd.load_errors."""
    real = ledger.message_key
    monkeypatch.setattr(ledger, "message_key", lambda source, message_id: (
        7 if message_id in ("col-a", "col-b") else real(source, message_id)))
    log.write([enriched("track", messageId=message_id, userId="u", event="E")
               for message_id in ("col-a", "col-b")])
    w = make_warehouse()
    w.expect_batch_failures()
    w.loader.load_available()
    assert w.rows("SELECT id FROM web.tracks") == [("col-a",)]
    assert w.rows("SELECT message_id FROM _trackd.load_errors") == [("col-b",)]
    assert w.rows("SELECT count(*) FROM _trackd.duplicates") == [(0,)]


def test_of_two_copies_on_two_shards_the_first_received_is_loaded(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    """The log hands gw0's record first, though gw1's copy was received earlier."""
    log.write([enriched("track", messageId="two", userId="u", event="E", properties={"v": 2},
                        received_at="2024-05-01T10:05:00.000Z")], "gw0")
    log.write([enriched("track", messageId="two", userId="u", event="E", properties={"v": 1},
                        received_at="2024-05-01T10:00:00.000Z")], "gw1")
    w = make_warehouse()
    assert w.loader.load_available() == 2
    assert w.rows("SELECT v FROM web.e") == [(1,)]
    assert w.rows("SELECT shard FROM _trackd.duplicates") == [("gw0",)]
