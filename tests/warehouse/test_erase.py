"""Privacy deletion in the warehouse: every table, the identity graph, sources, retention."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from tests.warehouse.conftest import Log, Warehouse, enriched
from trackd.warehouse.erase import erase, expire, linked_anonymous_ids, rewrite_store


def messages() -> list[dict[str, Any]]:
    """user-a (linked to anon-a and old-a) in web and backend, user-b in web."""
    return [
        enriched("track", userId=None, anonymousId="anon-a", event="Viewed"),
        enriched("identify", userId="user-a", anonymousId="anon-a",
                 traits={"email": "a@example.com"}),
        enriched("track", userId="user-a", anonymousId="anon-a", event="Paid",
                 properties={"amount": 3}),
        enriched("alias", userId="user-a", previousId="old-a"),
        enriched("identify", userId="user-b", anonymousId="anon-b", traits={"plan": "pro"}),
        enriched("track", userId="user-b", event="Paid", properties={"amount": 5}),
        enriched("track", userId="user-a", event="Paid", _source="backend"),
    ]


def _load(log: Log, make_warehouse: Callable[..., Warehouse]) -> Warehouse:
    log.write(messages())
    warehouse = make_warehouse()
    warehouse.loader.load_available()
    return warehouse


def _count(warehouse: Warehouse, user: str, anonymous: str) -> int:
    total = 0
    for schema, table in warehouse.rows(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE'"):
        columns = warehouse.columns(schema, table)
        tests = [f"{c} IN ('{user}', '{anonymous}')" for c in
                 ("user_id", "anonymous_id", "previous_id") if c in columns]
        if table == "users":
            tests.append(f"id = '{user}'")
        if tests:
            total += warehouse.rows(f'SELECT count(*) FROM "{schema}"."{table}" '
                                    f"WHERE {' OR '.join(tests)}")[0][0]
    return total


def test_a_user_and_their_linked_anonymous_ids_leave_every_table(
        log: Log, make_warehouse: Callable[..., Warehouse]) -> None:
    warehouse = _load(log, make_warehouse)
    con = warehouse.database.writer()
    linked = linked_anonymous_ids(con, {"user-a"}, None)
    assert linked == {"anon-a", "old-a"}
    before_b = _count(warehouse, "user-b", "anon-b")
    con.begin()
    deleted = erase(con, {"user-a"}, linked, {"web"})
    con.commit()
    assert deleted >= 10
    web_left = warehouse.rows("SELECT count(*) FROM web.tracks WHERE user_id = 'user-a' "
                              "OR anonymous_id = 'anon-a'")
    assert web_left == [(0,)]
    assert warehouse.rows("SELECT count(*) FROM web.users WHERE id = 'user-a'") == [(0,)]
    assert warehouse.rows("SELECT count(*) FROM web.aliases") == [(0,)]
    # another source is left alone when the regulation names its sources
    assert warehouse.rows("SELECT count(*) FROM backend.tracks WHERE user_id = 'user-a'") == [
        (1,)]
    assert warehouse.rows("SELECT count(*) FROM _trackd.messages WHERE source = 'backend' "
                          "AND user_id = 'user-a'") == [(1,)]
    assert _count(warehouse, "user-b", "anon-b") == before_b  # the others stay
    # the file is replaced by a copy (in the loader's thread, between two batches): same
    # content, same shape, and the loader goes on
    done = warehouse.loader.submit(rewrite_store)
    warehouse.loader.load_once()
    done.result(timeout=0)
    assert warehouse.rows("SELECT count(*) FROM web.tracks") == [(1,)]
    assert warehouse.rows("SELECT count(*) FROM web.users") == [(1,)]
    log.write([enriched("track", userId="user-c", event="Paid")])
    warehouse.loader.load_available()
    assert warehouse.rows("SELECT count(*) FROM web.paid") == [(2,)]


def test_retention_deletes_rows_received_before_the_cutoff_of_one_source(
        log: Log, make_warehouse: Callable[..., Warehouse]) -> None:
    warehouse = _load(log, make_warehouse)
    con = warehouse.database.writer()
    con.begin()
    deleted = expire(con, "web", datetime(2024, 5, 2))
    con.commit()
    assert deleted > 0
    assert warehouse.rows("SELECT count(*) FROM web.tracks") == [(0,)]
    assert warehouse.rows("SELECT count(*) FROM backend.tracks") == [(1,)]
    assert warehouse.rows("SELECT count(*) FROM _trackd.messages WHERE source = 'web'") == [
        (0,)]
