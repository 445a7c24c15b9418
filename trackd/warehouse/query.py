"""Read-only SQL over the warehouse: `trackd query` and `POST /api/v1/query`.

Three layers keep a query from writing:

1. DuckDB's own parser (`extract_statements`) must find exactly one statement, of type
   SELECT (which covers FROM-first queries, DESCRIBE, SHOW, SUMMARIZE, VALUES and WITH).
   INSERT, UPDATE, DELETE, CREATE, ALTER, DROP, COPY, ATTACH, DETACH, EXPORT, PRAGMA, SET,
   INSTALL, LOAD, CALL, EXPLAIN (ANALYZE runs its statement) and multi-statement text are
   refused with `QueryRefused`.
2. The statement runs in a `BEGIN TRANSACTION READ ONLY`, where DuckDB itself refuses writes.
3. The connection has external access disabled and its configuration locked (`db`), so no
   file outside the warehouse can be read or written and no setting changed.

At most `limit` rows are returned; a query running longer than `timeout` seconds is
interrupted. Queries run on their own cursors while the loader writes.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import duckdb

from trackd.errors import QueryRefused
from trackd.warehouse.db import Database

DEFAULT_TIMEOUT = 60.0


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def read_only_statement(sql: str, parser: duckdb.DuckDBPyConnection) -> str:
    """`sql` if it is exactly one SELECT statement; raises QueryRefused otherwise.

    `parser` is any connection of the caller's own (parsing runs on it; DuckDB connections
    are not shared between threads).
    """
    try:
        statements = parser.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRefused(f"not valid SQL: {_first_line(exc)}") from None
    if not statements:
        raise QueryRefused("no SQL statement given")
    if len(statements) > 1:
        raise QueryRefused("one statement at a time: multiple statements are refused")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise QueryRefused(f"read-only queries only: {kind.name} statements are refused")
    return sql


class WarehouseQueryEngine:
    """The `QueryEngine` of trackd.types over a `Database` (open for writing or read-only)."""

    def __init__(self, database: Database, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.database = database
        self.timeout = timeout

    def query(self, sql: str, *, limit: int = 10000) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Columns and up to `limit` rows. Raises QueryRefused (not read-only, not valid SQL,
        fails to run, or the warehouse is not open yet)."""
        if not self.database.is_open:
            raise QueryRefused("the warehouse is starting; try again in a moment")
        with self.database.reading() as cursor:
            statement = read_only_statement(sql, cursor)
            timer = threading.Timer(self.timeout, cursor.interrupt)
            timer.start()
            try:
                cursor.execute("BEGIN TRANSACTION READ ONLY")
                result = cursor.execute(statement)
                columns = [d[0] for d in result.description or ()]
                rows = result.fetchmany(limit) if limit > 0 else []
            except duckdb.InterruptException:
                raise QueryRefused(f"query interrupted after {self.timeout:g} s") from None
            except duckdb.Error as exc:
                raise QueryRefused(_first_line(exc)) from None
            finally:
                timer.cancel()
                with contextlib.suppress(duckdb.Error):
                    cursor.execute("ROLLBACK")
        return columns, [tuple(r) for r in rows]

    def close(self) -> None:
        self.database.close()
