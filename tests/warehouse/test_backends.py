"""One suite for both warehouses behind the seam (`trackd.warehouse.store`): the DuckDB file and
PostgreSQL (the machine's server on 127.0.0.1:5432; each test creates and drops its own
database). The same log is loaded into either; the tables, columns, types and rows must agree.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from tests.warehouse import pg
from tests.warehouse.conftest import Log, enriched
from tests.warehouse.test_pg_erase import running
from trackd.errors import QueryRefused
from trackd.log.reader import LogReader
from trackd.observability import Registry
from trackd.settings import WarehouseSettings
from trackd.types import QueryEngine
from trackd.warehouse.db import Database
from trackd.warehouse.duckstore import DuckStore
from trackd.warehouse.erase import WarehouseErasure
from trackd.warehouse.erasure import LoaderErasure
from trackd.warehouse.loader import WarehouseLoader, utcnow
from trackd.warehouse.lookup import WarehouseLookup
from trackd.warehouse.postgres.erase import PgErasure
from trackd.warehouse.postgres.query import PgQueryEngine
from trackd.warehouse.postgres.store import PgStore
from trackd.warehouse.profiles import profile_routes
from trackd.warehouse.query import WarehouseQueryEngine
from trackd.warehouse.schedule import BUDGET, TABLE_COST
from trackd.warehouse.store import Store

# information_schema's type names -> the contract's, per backend
TYPES = {"VARCHAR": "text", "BIGINT": "bigint", "DOUBLE": "double", "BOOLEAN": "boolean",
         "TIMESTAMP": "timestamp", "JSON": "json", "text": "text", "bigint": "bigint",
         "double precision": "double", "boolean": "boolean",
         "timestamp with time zone": "timestamp", "jsonb": "json"}
STANDARD = ("context_ip", "context_user_agent", "context_page_path", "context_page_referrer",
            "context_page_search", "context_page_title", "context_page_url",
            "context_campaign_name", "context_campaign_source", "context_campaign_medium",
            "context_campaign_term", "context_campaign_content", "context_library_name",
            "context_library_version")


@dataclass
class Loaded:
    """A loader over one store, driven in the test's thread."""

    kind: str
    store: Store
    loader: WarehouseLoader
    reader: LogReader
    metrics: Registry

    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with self.store.reading() as cur:
            return cur.execute(sql, params or []).fetchall()

    def columns(self, schema: str, table: str) -> dict[str, str]:
        return {name: TYPES[kind] for name, kind in self.rows(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [schema, table])}

    def load(self) -> int:
        return self.loader.load_available()


MakeLoaded = Callable[..., Loaded]


@pytest.fixture(params=["duckdb", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeLoaded]:
    """Factory: backend(log_dir=..., **WarehouseSettings) -> an opened loader on the store."""
    kind: str = request.param
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(pg.database()) if kind == "postgresql" else ""
        made: list[Loaded] = []

        def factory(log_dir: Path | None = None, **settings: Any) -> Loaded:
            wh = WarehouseSettings(**settings)
            store: Store = (PgStore(url, wh.max_columns_per_table) if url else
                            DuckStore(Database(tmp_path / "warehouse.duckdb"),
                                      wh.max_columns_per_table))
            reader = LogReader(log_dir or tmp_path / "log")
            metrics = Registry()
            loader = WarehouseLoader(wh, store, reader, metrics, retry_delay=0.0)
            loader.open()
            made.append(Loaded(kind, store, loader, reader, metrics))
            return made[-1]

        try:
            yield factory
        finally:
            for item in made:
                item.store.close()
                item.reader.close()


def test_calls_land_in_segments_layout_with_the_same_columns_and_types(
        log: Log, backend: MakeLoaded) -> None:
    log.write([
        enriched("track", messageId="t1", userId="u1", event="Order Completed",
                 properties={"revenue": 19.99, "quantity": 2, "coupon": "SPRING",
                             "paid": True, "shippedAt": "2024-05-02T08:00:00Z",
                             "product": {"sku": "A-1"}, "tags": ["a", "b"]}),
        enriched("identify", messageId="i1", userId="u1",
                 traits={"email": "a@x.test", "plan": "pro", "logins": 3}),
        enriched("page", messageId="p1", anonymousId="a1", name="Home",
                 properties={"url": "https://x.test/", "title": "Home"}),
        enriched("group", messageId="g1", userId="u1", groupId="acme",
                 traits={"name": "Acme", "employees": 50}),
        enriched("alias", messageId="al1", userId="u1", previousId="a1"),
    ])
    w = backend()
    assert w.load() == 5
    event = w.columns("web", "order_completed")
    assert {k: event[k] for k in ("id", "revenue", "quantity", "coupon", "paid", "shipped_at",
                                  "product_sku", "tags", "received_at", "_type_conflicts")} == {
        "id": "text", "revenue": "double", "quantity": "bigint", "coupon": "text",
        "paid": "boolean", "shipped_at": "timestamp", "product_sku": "text", "tags": "text",
        "received_at": "timestamp", "_type_conflicts": "json"}
    assert w.rows("SELECT id, event, event_text, user_id FROM web.tracks") == [
        ("t1", "order_completed", "Order Completed", "u1")]
    assert w.rows("SELECT revenue, quantity, coupon, paid, product_sku, tags "
                  "FROM web.order_completed") == [(19.99, 2, "SPRING", True, "A-1", '["a","b"]')]
    assert w.rows("SELECT id, email, plan, logins FROM web.users") == [
        ("u1", "a@x.test", "pro", 3)]
    assert w.rows("SELECT id, name, employees FROM web.accounts") == [("acme", "Acme", 50)]
    assert w.rows("SELECT name, url, title FROM web.pages") == [
        ("Home", "https://x.test/", "Home")]
    assert w.rows("SELECT previous_id FROM web.aliases") == [("a1",)]
    assert w.rows("SELECT group_id FROM web.groups") == [("acme",)]


def test_standard_columns_exist_on_a_fresh_source(log: Log, backend: MakeLoaded) -> None:
    log.write([enriched("track", event="Signed Up", userId="u", context={}),
               enriched("page", userId="u", context={})])
    w = backend()
    w.load()
    for table in ("tracks", "signed_up", "pages"):
        columns = w.columns("web", table)
        assert {c: columns.get(c) for c in STANDARD} == dict.fromkeys(STANDARD, "text"), table
    pages = w.columns("web", "pages")
    assert {c: pages.get(c) for c in ("url", "path", "title", "search", "referrer")} == \
        dict.fromkeys(("url", "path", "title", "search", "referrer"), "text")
    assert w.rows("SELECT count(*) FROM web.pages WHERE url IS NULL "
                  "AND context_page_url IS NULL") == [(1,)]


def test_a_message_sent_twice_or_replayed_loads_once(log: Log, backend: MakeLoaded,
                                                     tmp_path: Path) -> None:
    message = enriched("track", messageId="dup", userId="u", event="Clicked",
                       properties={"n": 1})
    log.write([message, message])
    w = backend()
    w.load()
    log.write([message], "gw1")
    w.load()
    assert w.rows("SELECT count(*) FROM web.tracks") == [(1,)]
    assert w.rows("SELECT count(*) FROM web.clicked") == [(1,)]
    assert w.rows("SELECT count(*) FROM _trackd.duplicates") == [(2,)]
    w.store.close()
    w.reader.close()
    replayed = backend(log_dir=tmp_path / "log")  # same warehouse, position kept
    replayed.loader.position = {}  # a replay of the whole log
    replayed.load()
    assert replayed.rows("SELECT count(*), count(DISTINCT id) FROM web.tracks") == [(1, 1)]


def test_one_message_id_on_two_shards_loads_once_in_one_batch(log: Log,
                                                              backend: MakeLoaded) -> None:
    """Two gateway workers each stored the same messageId (a client retried on another
    connection): both shards are read in one batch, and the message is loaded once, without
    a failed batch (no retry-and-split fallback)."""
    first = enriched("track", messageId="twice", userId="u", event="Clicked",
                     properties={"n": 1})
    log.write([first, enriched("track", userId="u", event="Clicked")], "gw0")
    log.write([dict(first, receivedAt="2024-05-01T10:00:01.000Z")], "gw1")
    w = backend()
    assert sorted(w.reader.shards()) == ["gw0", "gw1"]
    w.load()
    assert w.rows("SELECT count(*) FROM web.tracks WHERE id = 'twice'") == [(1,)]
    assert w.rows("SELECT count(*) FROM web.clicked") == [(2,)]
    assert w.rows("SELECT count(*) FROM _trackd.duplicates") == [(1,)]
    assert sum(v for _, v in w.metrics.snapshot()[
        "trackd_warehouse_batch_failures_total"]["values"]) == 0


def test_users_merge_traits_and_conflicts_are_kept_as_json(log: Log,
                                                           backend: MakeLoaded) -> None:
    log.write([enriched("identify", userId="u1", traits={"plan": "pro", "age": 30}),
               enriched("track", userId="u1", event="Paid", properties={"amount": 5})])
    w = backend()
    w.load()
    log.write([enriched("identify", userId="u1", traits={"plan": None, "city": "Oslo"},
                        received_at="2024-05-01T11:00:00.000Z"),
               enriched("track", userId="u1", event="Paid", properties={"amount": "lots"},
                        messageId="conflict", received_at="2024-05-01T11:00:00.000Z")],
              "gw1")
    w.load()
    assert w.rows("SELECT id, plan, age, city FROM web.users") == [("u1", None, 30, "Oslo")]
    [(amount, conflicts)] = w.rows("SELECT amount, CAST(_type_conflicts AS VARCHAR) "
                                   "FROM web.paid WHERE id = 'conflict'")
    assert amount is None
    assert conflicts.replace(" ", "") == '{"amount":"lots"}'
    assert sum(v for _, v in w.metrics.snapshot()[  # that row alone, counted once
        "trackd_warehouse_type_conflicts_total"]["values"]) == 1


def test_where_is_my_event_reads_either_store(log: Log, backend: MakeLoaded) -> None:
    log.write([enriched("track", messageId="m1", userId="u", event="Seen")])
    w = backend()
    w.load()
    answer = WarehouseLookup(w.store, ["web"]).lookup("m1")
    assert answer["found"] is True
    assert sorted((x["schema"], x["table"]) for x in answer["loaded"]) == [
        ("web", "seen"), ("web", "tracks")]
    assert WarehouseLookup(w.store, ["web"]).lookup("nope")["found"] is False


def profile_events(w: Loaded, user_id: str) -> httpx.Response:
    """The Profile API's answer for the user's events (newest first)."""
    app = Starlette(routes=profile_routes(w.store, "admin", utcnow))

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://trackd.test") as http:
            return await http.get(
                f"/v1/spaces/spa_1/collections/users/profiles/user_id:{user_id}/events",
                auth=("admin", ""))

    return asyncio.run(get())


def test_a_message_loaded_again_twice_in_one_batch_keeps_both_tables_in_the_ledger(
        log: Log, backend: MakeLoaded) -> None:
    """Two copies past the window, each of another call type, in one batch: the ledger row
    lists both new tables (it kept one of them, so a later copy filled the other twice)."""
    log.write([enriched("track", messageId="twice", userId="u", event="E",
                        received_at="2024-05-01T00:00:00.000Z")])
    w = backend(dedup_window_days=1)
    assert w.load() == 1
    log.write([enriched(kind, messageId="twice", userId="u", received_at=received_at)
               for kind, received_at in (("screen", "2024-05-10T00:00:00.000Z"),
                                         ("page", "2024-05-20T00:00:00.000Z"))])
    assert w.load() == 2
    [(tables,)] = w.rows("SELECT tables FROM _trackd.messages WHERE message_id = 'twice'")
    assert sorted(tables) == ["e", "pages", "screens", "tracks"]
    log.write([enriched(kind, messageId="twice", userId="u", received_at="2024-06-01T00:00:00.000Z")
               for kind in ("screen", "page")])
    assert w.load() == 2
    assert w.rows("SELECT (SELECT count(*) FROM web.screens), (SELECT count(*) FROM web.pages)"
                  ) == [(1, 1)]
    assert w.rows("SELECT count(*) FROM _trackd.duplicates WHERE message_id = 'twice'"
                  ) == [(2,)]


def test_a_message_loaded_again_after_the_window_is_found_in_both_tables(
        log: Log, backend: MakeLoaded) -> None:
    """A messageId loaded again beyond the dedup window into another table (another call
    type): the ledger lists both loads, so "where is my event" shows both tables, the Profile
    API lists each call once, and deleting the user removes both rows."""
    now = datetime.now(UTC)  # recent: profile events are kept (and listed) for 14 days

    def at(days_ago: int) -> str:
        return (now - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%S.000Z")

    log.write([enriched("track", messageId="again", userId="u-again", event="Clicked",
                        received_at=at(3))])
    w = backend(dedup_window_days=1)
    assert w.load() == 1
    log.write([enriched("page", messageId="again", userId="u-again", name="Home",
                        received_at=at(1))], "gw1")
    assert w.load() == 1
    answer = WarehouseLookup(w.store, ["web"]).lookup("again")
    assert sorted((x["schema"], x["table"]) for x in answer["loaded"]) == [
        ("web", "clicked"), ("web", "pages"), ("web", "tracks")]
    assert answer["duplicates"] == []
    [(tables,)] = w.rows("SELECT tables FROM _trackd.messages WHERE message_id = 'again'")
    assert sorted(tables) == ["clicked", "pages", "tracks"]
    assert w.rows("SELECT type, count(*) FROM _trackd.events WHERE message_id = 'again' "
                  "GROUP BY type ORDER BY type") == [("page", 1), ("track", 1)]
    events = profile_events(w, "u-again")
    assert events.status_code == 200, events.text
    assert [(e["type"], e["message_id"]) for e in events.json()["data"]] == [
        ("page", "again"), ("track", "again")]

    erasure: LoaderErasure = (PgErasure(w.loader, ["web"]) if isinstance(w.store, PgStore)
                              else WarehouseErasure(w.loader))
    assert running(w.loader, lambda: erasure.erase({"u-again"}, set(), None)) > 0
    w.store.open()
    for table in ("tracks", "clicked", "pages"):
        assert w.rows(f"SELECT count(*) FROM web.{table} WHERE id = 'again'") == [(0,)], table
    for table in ("messages", "events"):
        assert w.rows(f"SELECT count(*) FROM _trackd.{table} WHERE message_id = 'again'") == [
            (0,)], table
    assert WarehouseLookup(w.store, ["web"]).lookup("again")["found"] is False
    assert profile_events(w, "u-again").status_code == 404


def test_a_nul_character_never_stops_a_load(log: Log, backend: MakeLoaded) -> None:
    """PostgreSQL's text cannot hold NUL: there the character is dropped, on DuckDB kept."""
    log.write([enriched("track", userId="u", event="Typed", properties={"n": 1, "s": "x"}),
               enriched("track", userId="u", event="Typed", messageId="nul",
                        properties={"n": "1\u0000x", "s": "a\u0000b"})])
    w = backend()
    w.load()
    [(text, conflicts)] = w.rows("SELECT s, CAST(_type_conflicts AS VARCHAR) FROM web.typed "
                                 "WHERE id = 'nul'")
    assert text == ("ab" if w.kind == "postgresql" else "a\x00b")
    assert "1" in conflicts and "x" in conflicts
    assert w.rows("SELECT count(*) FROM _trackd.load_errors") == [(0,)]


def engine_of(w: Loaded) -> QueryEngine:
    if isinstance(w.store, PgStore):
        return PgQueryEngine(w.store.url)
    assert isinstance(w.store, DuckStore)
    return WarehouseQueryEngine(w.store.database)


@pytest.mark.parametrize("sql", ["DELETE FROM web.tracks", "SELECT 1; DELETE FROM web.tracks",
                                 "COMMIT; DELETE FROM web.tracks",
                                 "CREATE TABLE web.x AS SELECT 1 AS one"])
def test_queries_read_and_never_write(log: Log, backend: MakeLoaded, sql: str) -> None:
    log.write([enriched("track", userId="u", event="Kept")])
    w = backend()
    w.load()
    engine = engine_of(w)
    with pytest.raises(QueryRefused):
        engine.query(sql)
    answer = engine.query("SELECT event, count(*) AS n FROM web.tracks GROUP BY event")
    assert (answer.columns, answer.rows) == (["event", "n"], [("kept", 1)])


def test_a_reader_takes_question_marks_and_percent_signs(log: Log, backend: MakeLoaded) -> None:
    log.write([enriched("track", userId="u%1", event="Kept")])
    w = backend()
    w.load()
    with w.store.reading() as cur:
        assert cur.execute("SELECT 'a%b'").fetchall() == [("a%b",)]
        assert cur.execute("SELECT user_id FROM web.tracks WHERE user_id LIKE '%\\%%' "
                           "ESCAPE '\\' AND event = ?", ["kept"]).fetchone() == ("u%1",)


def test_a_source_with_heavy_schema_work_neither_holds_back_others_nor_loses_a_crash(
        log: Log, backend: MakeLoaded, tmp_path: Path) -> None:
    events = 3 * BUDGET // TABLE_COST  # three transactions' worth of new event tables
    log.write([enriched("track", userId="a", event=f"e{i}") for i in range(events)])
    log.write([enriched("track", source="backend", userId="u", event="Canary",
                        messageId="canary")])
    w = backend()
    w.loader.load_once()  # the canary's source first, then one chunk of web's tables
    assert w.rows("SELECT id FROM backend.tracks") == [("canary",)]
    assert 0 < w.rows("SELECT count(*) FROM web.tracks")[0][0] < events
    w.store.close()  # a crash between chunks: the loader's memory is gone
    w.reader.close()
    again = backend(log_dir=tmp_path / "log")
    again.load()
    assert again.rows("SELECT count(*), count(DISTINCT id) FROM web.tracks") == [
        (events, events)]
    assert again.rows("SELECT count(*) FROM backend.tracks") == [(1,)]
    assert again.rows("SELECT count(*), count(DISTINCT message_id) FROM _trackd.messages") == [
        (events + 1, events + 1)]
