"""Read-only SQL over the PostgreSQL warehouse: `trackd query` and `POST /api/v1/query`.

A read-only transaction alone is escaped by `COMMIT; DELETE ...`, by `SET TRANSACTION READ
WRITE; ...` or by several statements in one string. Here the server enforces what SQL cannot
undo:

1. The query runs as `DECLARE ... CURSOR FOR <sql>` (a server-side cursor) over the extended
   protocol: PostgreSQL's parser accepts exactly one SELECT or VALUES there (a second
   statement, COMMIT, SET, DELETE or a data-modifying WITH are errors before anything runs).
2. It runs in a `READ ONLY` transaction opened before it; a SELECT cannot leave it
   (`set_config('transaction_read_only', 'off', ...)` is refused once a query ran), and it is
   rolled back afterwards.
3. `statement_timeout` is set on the server for the transaction, and the connection is the
   query's own, closed afterwards (session state such as advisory locks dies with it).

With `[warehouse] query_url` the queries also log in as another role (give it SELECT only).
Bounds as on DuckDB: `max_rows`, `max_bytes` (as JSON), fetched in chunks, `truncated`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import psycopg

from trackd.errors import ConfigError, QueryRefused
from trackd.types import QueryResult
from trackd.warehouse.postgres.connect import connect
from trackd.warehouse.query import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ROWS,
    DEFAULT_TIMEOUT,
    PooledEngine,
    fetch_capped,
    first_line,
)

_FIRST_WORD = re.compile(r"^\s*(?:(?:--[^\n]*\n)|(?:/\*.*?\*/)|\s)*\(*\s*([A-Za-z]+)", re.S)
_READING = {"select", "with", "values", "table"}


class PgQueryEngine(PooledEngine):
    """The `QueryEngine` of trackd.types over a PostgreSQL warehouse at `url`."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT,
                 max_rows: int = DEFAULT_MAX_ROWS, max_bytes: int = DEFAULT_MAX_BYTES,
                 workers: int = 2, thread_setup: Callable[[], object] | None = None) -> None:
        super().__init__(timeout=timeout, max_rows=max_rows, max_bytes=max_bytes,
                         workers=workers, thread_setup=thread_setup)
        self.url = url
        self._running: dict[psycopg.Connection[Any], str] = {}  # connection -> why cancelled

    def interrupt_all(self, reason: str, *, wait: float = 0.0) -> int:
        """Cancel every running query; `wait` is not needed here (the queries' memory is the
        PostgreSQL server's, not the loader's)."""
        with self._lock:
            for con in self._running:
                self._running[con] = reason
                con.cancel_safe()
            return len(self._running)

    def query(self, sql: str, *, limit: int | None = None) -> QueryResult:
        first = _FIRST_WORD.match(sql)
        if not sql.strip():
            raise QueryRefused("no SQL statement given")
        if first is None or first.group(1).lower() not in _READING:
            word = first.group(1).upper() if first else "this"
            raise QueryRefused(f"read-only queries only: {word} statements are refused")
        max_rows = self.max_rows if limit is None else max(0, min(limit, self.max_rows))
        try:
            con = connect(self.url)
        except ConfigError as exc:
            raise QueryRefused(str(exc)) from None
        with self._lock:
            self._running[con] = f"after {self.timeout:g} s"
        try:
            con.read_only = True  # BEGIN READ ONLY, before the query
            con.execute("SELECT set_config('statement_timeout', %s, true)",
                        [f"{int(self.timeout * 1000)}ms"])
            with con.cursor(name="trackd_query") as cursor:  # DECLARE ... CURSOR FOR <sql>
                cursor.execute(sql)
                columns = [d.name for d in cursor.description or ()]
                rows, truncated = fetch_capped(cursor.fetchmany, max_rows, self.max_bytes)
        except psycopg.errors.QueryCanceled:
            raise QueryRefused(f"query interrupted {self._running[con]}") from None
        except psycopg.Error as exc:
            raise QueryRefused(first_line(exc)) from None
        finally:
            with self._lock:
                self._running.pop(con, None)
            con.close()  # rolls the transaction back
        return QueryResult(columns, rows, truncated)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
