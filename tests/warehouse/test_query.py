"""Read-only SQL: what is refused, what runs, and reading while the loader writes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import eventually
from tests.warehouse.conftest import Log, Warehouse, enriched
from trackd.errors import QueryRefused
from trackd.warehouse import query as query_module
from trackd.warehouse.db import Database
from trackd.warehouse.query import WarehouseQueryEngine, read_only_statement

MakeWarehouse = Callable[..., Warehouse]


@pytest.mark.parametrize("sql", [
    "INSERT INTO web.tracks (id) VALUES ('x')",
    "UPDATE web.tracks SET id = 'y'",
    "DELETE FROM web.tracks",
    "CREATE TABLE web.evil AS SELECT 1",
    "CREATE MACRO m(x) AS x",
    "DROP TABLE web.tracks",
    "ALTER TABLE web.tracks ADD COLUMN z INTEGER",
    "COPY web.tracks TO '/tmp/out.csv'",
    "ATTACH '/tmp/other.duckdb' AS other",
    "DETACH other",
    "EXPORT DATABASE '/tmp/export'",
    "PRAGMA enable_profiling",
    "SET threads = 1",
    "RESET threads",
    "USE web",
    "INSTALL httpfs",
    "LOAD httpfs",
    "CALL pragma_version()",
    "CHECKPOINT",
    "VACUUM",
    "BEGIN TRANSACTION",
    "EXPLAIN ANALYZE DELETE FROM web.tracks",
    "MERGE INTO web.tracks USING web.tracks AS s ON (tracks.id = s.id) WHEN MATCHED THEN DELETE",
    "SELECT 1; DROP TABLE web.tracks",
    "SELECT 1; SELECT 2",
    "SELEC nonsense",
    "FROM checkpoint()",
    "SELECT * FROM force_checkpoint()",
    "SELECT 1 WHERE EXISTS (SELECT * FROM checkpoint())",
    "WITH c AS (SELECT * FROM force_checkpoint('warehouse')) SELECT * FROM c",
    "SELECT * FROM query('DELETE FROM web.tracks')",
    "SELECT * FROM query_table('web.tracks')",
    "SELECT nextval('seq')",
    "SELECT setseed(0.5)",
    "   ",
])
def test_anything_but_one_select_is_refused(sql: str, make_warehouse: MakeWarehouse) -> None:
    w = make_warehouse()
    with w.database.reading() as parser, pytest.raises(QueryRefused):
        read_only_statement(sql, parser)
    with pytest.raises(QueryRefused):
        WarehouseQueryEngine(w.database).query(sql)
    assert w.rows("SELECT count(*) FROM _trackd.offsets") == [(0,)]


Rows = list[tuple[object, ...]]


def _names(rows: Rows) -> set[object]:
    return {row[0] for row in rows}


@pytest.mark.parametrize(("sql", "check"), [
    ("SELECT count(*) FROM web.tracks", lambda rows: rows == [(1,)]),
    ("FROM web.tracks SELECT id", lambda rows: rows == [("q-1",)]),
    ("WITH t AS (SELECT id, event FROM web.tracks) SELECT * FROM t",
     lambda rows: rows == [("q-1", "e")]),
    ("DESCRIBE web.tracks", lambda rows: {"id", "event", "user_id"} <= _names(rows)),
    ("SHOW ALL TABLES", lambda rows: {("web", "e"), ("web", "tracks")} <= {
        (r[1], r[2]) for r in rows}),
    ("SUMMARIZE web.tracks",
     lambda rows: [(r[0], r[-2]) for r in rows if r[0] == "id"] == [("id", 1)]),
    ("VALUES (1, 2)", lambda rows: rows == [(1, 2)]),
    ("SELECT message_id FROM _trackd.duplicates", lambda rows: rows == [("q-1",)]),
])
def test_read_only_queries_run(sql: str, check: Callable[[Rows], bool], log: Log,
                               make_warehouse: MakeWarehouse) -> None:
    first = enriched("track", userId="u", event="E", messageId="q-1")
    log.write([first, {**first}])  # the copy is a duplicate: _trackd.duplicates has a row
    w = make_warehouse()
    w.loader.load_available()
    result = WarehouseQueryEngine(w.database).query(sql)
    assert result.columns
    assert check(result.rows), result.rows


def test_the_read_only_transaction_refuses_a_select_that_writes(
        make_warehouse: MakeWarehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second layer on its own: with the parser check out of the way, `nextval` (a SELECT
    that writes) is refused by DuckDB's read-only transaction."""
    w = make_warehouse()
    w.database.writer().execute("CREATE SEQUENCE main.counter")
    sql = "SELECT nextval('main.counter')"
    with w.database.reading() as parser, pytest.raises(QueryRefused):
        read_only_statement(sql, parser)  # the first layer refuses it
    monkeypatch.setattr(query_module, "read_only_statement", lambda sql, parser: sql)
    with pytest.raises(QueryRefused, match="read-only"):
        WarehouseQueryEngine(w.database).query(sql)
    assert w.database.writer().execute(sql).fetchall() == [(1,)]  # never advanced


def test_selects_cannot_reach_files_or_settings(log: Log,
                                                make_warehouse: MakeWarehouse) -> None:
    w = make_warehouse()
    engine = WarehouseQueryEngine(w.database)
    with pytest.raises(QueryRefused, match="disabled"):
        engine.query("SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(QueryRefused):
        engine.query("SELECT * FROM query('INSERT INTO _trackd.offsets VALUES (''x'', 1)')")
    assert w.rows("SELECT count(*) FROM _trackd.offsets") == [(0,)]


def test_rows_are_limited_and_long_queries_interrupted(make_warehouse: MakeWarehouse) -> None:
    w = make_warehouse()
    result = WarehouseQueryEngine(w.database).query("SELECT * FROM range(100) t(n)", limit=3)
    assert (result.columns, result.rows, result.truncated) == (["n"], [(0,), (1,), (2,)], True)
    exact = WarehouseQueryEngine(w.database, max_rows=100).query("SELECT * FROM range(100)")
    assert len(exact.rows) == 100 and not exact.truncated
    slow = WarehouseQueryEngine(w.database, timeout=0.2)
    with pytest.raises(QueryRefused, match="interrupted"):
        slow.query("SELECT count(*) FROM range(100000000000) a")


def test_queries_read_committed_data_while_a_load_is_in_flight(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    log.write([enriched("track", userId="u", event="E")])
    w = make_warehouse()
    w.loader.load_available()
    con = w.database.writer()
    con.begin()  # a load transaction, open
    con.execute("INSERT INTO web.tracks (id) VALUES ('uncommitted')")
    engine = WarehouseQueryEngine(w.database)
    assert engine.query("SELECT count(*) FROM web.tracks").rows == [(1,)]
    con.commit()
    assert engine.query("SELECT count(*) FROM web.tracks").rows == [(2,)]


def test_the_offline_engine_opens_the_file_read_only(
        tmp_path: Path, log: Log, make_warehouse: MakeWarehouse) -> None:
    log.write([enriched("track", userId="u", event="E")])
    w = make_warehouse()
    w.loader.load_available()
    w.database.close()
    database = Database(tmp_path / "warehouse.duckdb", read_only=True)
    database.open()
    try:
        engine = WarehouseQueryEngine(database)
        assert engine.query("SELECT event FROM web.tracks").rows == [("e",)]
        with database.reading() as cur, pytest.raises(Exception, match="read-only"):
            cur.execute("INSERT INTO web.tracks (id) VALUES ('x')")
    finally:
        database.close()


def test_results_are_capped_in_bytes_while_fetching(make_warehouse: MakeWarehouse) -> None:
    w = make_warehouse()
    engine = WarehouseQueryEngine(w.database, max_bytes=100_000)
    result = engine.query("SELECT n, repeat('x', 1000) AS pad FROM range(100000) t(n)")
    assert result.truncated and 50 <= len(result.rows) <= 100
    assert result.rows[-1][0] == len(result.rows) - 1  # the first rows, in order


def test_interrupt_all_stops_running_queries_with_the_reason(
        make_warehouse: MakeWarehouse) -> None:
    w = make_warehouse()
    engine = WarehouseQueryEngine(w.database, workers=2)

    async def scenario() -> None:
        slow = asyncio.ensure_future(engine.run("SELECT count(*) FROM range(100000000000) a"))
        await asyncio.to_thread(eventually, lambda: engine.interrupt_all("to test") == 1)
        with pytest.raises(QueryRefused, match="interrupted to test"):
            await slow
        assert (await engine.run("SELECT 42")).rows == [(42,)]

    asyncio.run(scenario())
