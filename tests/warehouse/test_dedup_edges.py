"""Dedup at its edges, found by mutation testing of the batch (docs/testing.md): the window's
exact end, and a messageId loaded again (after the window) twice in one batch, whose ledger
row kept only one of the two new tables, so a later copy filled a table a second time."""

from __future__ import annotations

from collections.abc import Callable

from tests.warehouse.conftest import Log, Warehouse, enriched

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
