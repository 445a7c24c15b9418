"""Read-only SQL over the warehouse: `trackd query` and `POST /api/v1/query`.

Four layers keep a query from writing:

1. DuckDB's own parser (`extract_statements`) must find exactly one statement, of type
   SELECT (which covers FROM-first queries, DESCRIBE, SHOW, SUMMARIZE, VALUES and WITH).
   INSERT, UPDATE, DELETE, CREATE, ALTER, DROP, COPY, ATTACH, DETACH, EXPORT, PRAGMA, SET,
   INSTALL, LOAD, CALL, EXPLAIN (ANALYZE runs its statement) and multi-statement text are
   refused with `QueryRefused`.
2. The parsed statement (`json_serialize_sql`) is walked for every function it calls: functions
   that change state even inside a SELECT (`checkpoint()`, `force_checkpoint()`, `nextval`,
   `setseed`) or run SQL text the parser never saw (`query()`, `query_table()`) are refused.
3. The statement runs in a `BEGIN TRANSACTION READ ONLY`, where DuckDB itself refuses writes.
4. The connection has external access disabled and its configuration locked (`db`), so no
   file outside the warehouse can be read or written and no setting changed.

Bounds: at most `max_rows` rows and `max_bytes` bytes of rows (as JSON) are fetched, in chunks,
and the answer says `truncated`; a query running longer than `timeout` seconds is interrupted;
`run` executes queries on a pool of `workers` threads of the engine's own (the others wait), so
queries never hold the threads that delivery, lookups or the loader use; `interrupt_all` stops
every running query (the loader calls it when a batch runs out of memory). Spill files are
capped by the database (`db`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from typing import Any

import duckdb
import msgspec

from trackd.errors import QueryRefused
from trackd.types import QueryResult
from trackd.warehouse.db import Database

DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_ROWS = 10000
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
CHUNK_ROWS = 1000
UNWIND_WAIT = 5.0  # how long the loader waits for the queries it interrupted to end
# Functions that change state, or run SQL the read-only check never parsed.
REFUSED_FUNCTIONS = frozenset({"checkpoint", "force_checkpoint", "query", "query_table",
                               "nextval", "setseed"})


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def fetch_capped(fetchmany: Callable[[int], list[Any]], max_rows: int,
                 max_bytes: int) -> tuple[list[tuple[Any, ...]], bool]:
    """Rows in chunks until the row or byte cap (counted as JSON, as the API sends them);
    whether rows were left out."""
    rows: list[tuple[Any, ...]] = []
    size = 0
    while True:
        chunk = fetchmany(min(CHUNK_ROWS, max_rows - len(rows) + 1))
        if not chunk:
            return rows, False
        for row in chunk:
            size += len(msgspec.json.encode(row, enc_hook=str))
            if len(rows) >= max_rows or size > max_bytes:
                return rows, True
            rows.append(tuple(row))


def _functions(tree: Any, found: set[str]) -> set[str]:
    """Every function name in a `json_serialize_sql` tree."""
    if isinstance(tree, dict):
        name = tree.get("function_name")
        if isinstance(name, str):
            found.add(name.lower())
        for value in tree.values():
            _functions(value, found)
    elif isinstance(tree, list):
        for value in tree:
            _functions(value, found)
    return found


def read_only_statement(sql: str, parser: duckdb.DuckDBPyConnection) -> str:
    """`sql` if it is exactly one SELECT statement calling no function that changes state;
    raises QueryRefused otherwise.

    `parser` is any connection of the caller's own (parsing runs on it; DuckDB connections
    are not shared between threads).
    """
    try:
        statements = parser.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRefused(f"not valid SQL: {first_line(exc)}") from None
    if not statements:
        raise QueryRefused("no SQL statement given")
    if len(statements) > 1:
        raise QueryRefused("one statement at a time: multiple statements are refused")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise QueryRefused(f"read-only queries only: {kind.name} statements are refused")
    row = parser.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    tree = msgspec.json.decode(row[0]) if row else {"error": True}
    if not isinstance(tree, dict) or tree.get("error"):
        message = tree.get("error_message") if isinstance(tree, dict) else None
        raise QueryRefused(f"not a query that can be checked: {message or 'unknown'}")
    refused = sorted(_functions(tree, set()) & REFUSED_FUNCTIONS)
    if refused:
        raise QueryRefused(f"read-only queries only: {refused[0]}() is refused")
    return sql


class PooledEngine:
    """What both warehouses' engines share: the caps and a pool of threads of their own."""

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT, max_rows: int = DEFAULT_MAX_ROWS,
                 max_bytes: int = DEFAULT_MAX_BYTES, workers: int = 2,
                 thread_setup: Callable[[], object] | None = None) -> None:
        self.timeout = timeout
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, workers), thread_name_prefix="trackd-query",
            initializer=thread_setup)
        self._lock = threading.Condition()

    def query(self, sql: str, *, limit: int | None = None) -> QueryResult:
        raise NotImplementedError

    async def run(self, sql: str, *, limit: int | None = None) -> QueryResult:
        """`query` on the engine's own threads."""
        return await asyncio.wrap_future(self._pool.submit(self.query, sql, limit=limit))


class WarehouseQueryEngine(PooledEngine):
    """The `QueryEngine` of trackd.types over a `Database` (open for writing or read-only)."""

    def __init__(self, database: Database, *, timeout: float = DEFAULT_TIMEOUT,
                 max_rows: int = DEFAULT_MAX_ROWS, max_bytes: int = DEFAULT_MAX_BYTES,
                 workers: int = 2, thread_setup: Callable[[], object] | None = None) -> None:
        super().__init__(timeout=timeout, max_rows=max_rows, max_bytes=max_bytes,
                         workers=workers, thread_setup=thread_setup)
        self.database = database
        self._running: dict[duckdb.DuckDBPyConnection, str] = {}  # cursor -> why interrupted

    def interrupt_all(self, reason: str, *, wait: float = 0.0) -> int:
        """Interrupt every running query (its answer gives `reason`); returns how many. With
        `wait`, returns once they have ended (their memory is back) or after `wait` seconds."""
        with self._lock:
            interrupted = list(self._running)
            for cursor in interrupted:
                self._running[cursor] = reason
                cursor.interrupt()
            self._lock.wait_for(lambda: not any(c in self._running for c in interrupted),
                                timeout=wait)
            return len(interrupted)

    def query(self, sql: str, *, limit: int | None = None) -> QueryResult:
        """Columns and rows up to the caps. Raises QueryRefused (not read-only, not valid SQL,
        fails to run, interrupted, or the warehouse is not open yet)."""
        if not self.database.is_open:
            raise QueryRefused("the warehouse is starting; try again in a moment")
        max_rows = self.max_rows if limit is None else max(0, min(limit, self.max_rows))
        with self.database.reading() as cursor:
            statement = read_only_statement(sql, cursor)
            with self._lock:
                self._running[cursor] = f"after {self.timeout:g} s"
            timer = threading.Timer(self.timeout, cursor.interrupt)
            timer.start()
            try:
                cursor.execute("BEGIN TRANSACTION READ ONLY")
                result = cursor.execute(statement)
                columns = [d[0] for d in result.description or ()]
                rows, truncated = self._fetch(result, max_rows)
            except duckdb.InterruptException:
                raise QueryRefused(f"query interrupted {self._running[cursor]}") from None
            except duckdb.Error as exc:
                raise QueryRefused(first_line(exc)) from None
            finally:
                timer.cancel()
                with contextlib.suppress(duckdb.Error):
                    cursor.execute("ROLLBACK")
                with self._lock:  # ended: `interrupt_all` may return
                    self._running.pop(cursor, None)
                    self._lock.notify_all()
        return QueryResult(columns, rows, truncated)

    def _fetch(self, result: duckdb.DuckDBPyConnection,
               max_rows: int) -> tuple[list[tuple[Any, ...]], bool]:
        return fetch_capped(result.fetchmany, max_rows, self.max_bytes)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.database.close()
