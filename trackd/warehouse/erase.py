"""Privacy deletion in the DuckDB warehouse: every table, then a rewrite of the file.

`linked_anonymous_ids` reads the identity graph (the load ledger and the aliases tables) for
the anonymous ids a user's calls carried. `erase` deletes, in ONE transaction, every row of the
subjects: any table's rows whose `user_id`, `anonymous_id` or `previous_id` is one of their
ids, a source's `users` row (`id` = the user id), and any row whose `message_id` (or, in event
tables, `id`) is one of their messages' (duplicates, load errors, violations). Both run in the
loader's thread on its write connection (`WarehouseLoader.submit`).

DuckDB keeps deleted rows' bytes in blocks it frees but does not overwrite, so `rewrite`
copies the live database into a new file (`COPY FROM DATABASE`), which then replaces the old
one: only when it has run are the bytes gone. It closes the connections (admin queries running
then are interrupted first, and a query asked meanwhile waits or fails with "not open").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from trackd.observability import get_logger
from trackd.warehouse.db import Database, registered
from trackd.warehouse.duckstore import DuckStore
from trackd.warehouse.naming import quote

if TYPE_CHECKING:
    from trackd.warehouse.loader import WarehouseLoader
    from trackd.warehouse.store import Store

log = get_logger("warehouse")
_IDS, _USERS, _MESSAGES = "__trackd_erase_ids", "__trackd_erase_users", "__trackd_erase_messages"
_SUBJECT_COLUMNS = ("user_id", "anonymous_id", "previous_id")


def _ids(values: Iterable[str]) -> pa.Table:
    return pa.table({"id": pa.array(sorted(set(values)), pa.string())})


def _tables(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], set[str]]:
    rows = con.execute(
        "SELECT c.table_schema, c.table_name, c.column_name FROM information_schema.columns c "
        "JOIN information_schema.tables t USING (table_catalog, table_schema, table_name) "
        "WHERE t.table_type = 'BASE TABLE' AND t.table_catalog = current_database()"
    ).fetchall()
    out: dict[tuple[str, str], set[str]] = {}
    for schema, table, column in rows:
        out.setdefault((schema, table), set()).add(column)
    return out


def linked_anonymous_ids(con: duckdb.DuckDBPyConnection, user_ids: set[str],
                         sources: set[str] | None) -> set[str]:
    """Anonymous ids (and alias previous ids) that the users' loaded calls linked to them."""
    if not user_ids:
        return set()
    found: set[str] = set()
    with registered(con, _USERS, _ids(user_ids)):
        for (schema, table), columns in _tables(con).items():
            if schema != "_trackd" and sources is not None and schema not in sources:
                continue
            if table in ("messages", "events") and schema == "_trackd" or \
                    table == "aliases" and schema != "_trackd":
                for column in ("anonymous_id", "previous_id"):
                    if column in columns and "user_id" in columns:
                        filtered = "" if sources is None or "source" not in columns else \
                            " AND source IN (SELECT unnest(?::VARCHAR[]))"
                        params = [] if not filtered else [sorted(sources or ())]
                        found.update(r[0] for r in con.execute(
                            f"SELECT DISTINCT {column} FROM {quote(schema)}.{quote(table)} "
                            f"WHERE user_id IN (SELECT id FROM {_USERS}) "
                            f"AND {column} IS NOT NULL{filtered}", params).fetchall())
    return found - user_ids


def erase(con: duckdb.DuckDBPyConnection, user_ids: set[str], anonymous_ids: set[str],
          sources: set[str] | None) -> int:
    """Delete every row of the subjects (call inside a transaction); returns rows deleted."""
    ids = user_ids | anonymous_ids
    if not ids:
        return 0
    deleted = 0
    tables = _tables(con)
    with registered(con, _IDS, _ids(ids)), registered(con, _USERS, _ids(user_ids)):
        message_ids = {r[0] for r in con.execute(
            f"SELECT message_id FROM _trackd.messages WHERE (user_id IN (SELECT id FROM {_IDS}) "
            f"OR anonymous_id IN (SELECT id FROM {_IDS}))"
            + ("" if sources is None else " AND source IN (SELECT unnest(?::VARCHAR[]))"),
            [] if sources is None else [sorted(sources)]).fetchall()}
        with registered(con, _MESSAGES, _ids(message_ids)):
            for (schema, table), columns in sorted(tables.items()):
                if schema != "_trackd" and sources is not None and schema not in sources:
                    continue
                tests = [f"{c} IN (SELECT id FROM {_IDS})" for c in _SUBJECT_COLUMNS
                         if c in columns]
                if "message_id" in columns:
                    tests.append(f"message_id IN (SELECT id FROM {_MESSAGES})")
                if schema != "_trackd" and "id" in columns:
                    tests.append(f"id IN (SELECT id FROM {_USERS})" if table == "users"
                                 else f"id IN (SELECT id FROM {_MESSAGES})")
                if not tests:
                    continue
                where = " OR ".join(tests)
                if schema == "_trackd" and sources is not None and "source" in columns:
                    where = f"({where}) AND source IN (SELECT unnest(?::VARCHAR[]))"
                    params: list[object] = [sorted(sources)]
                else:
                    params = []
                deleted += con.execute(
                    f"DELETE FROM {quote(schema)}.{quote(table)} WHERE {where}",
                    params).fetchone()[0]  # type: ignore[index]
    return deleted


def expire(con: duckdb.DuckDBPyConnection, source: str, cutoff: datetime) -> int:
    """Delete a source's rows received before `cutoff` (UTC, naive) from its tables and from
    trackd's own (call inside a transaction); returns rows deleted. Retention."""
    deleted = 0
    for (schema, table), columns in sorted(_tables(con).items()):
        if "received_at" not in columns or schema not in (source, "_trackd"):
            continue
        if schema == "_trackd" and "source" not in columns:
            continue
        where = "TRY_CAST(received_at AS TIMESTAMP) < ?::TIMESTAMP"
        if schema == "_trackd":
            where += " AND source = ?"
        params: list[object] = [cutoff] + ([source] if schema == "_trackd" else [])
        deleted += con.execute(f"DELETE FROM {quote(schema)}.{quote(table)} WHERE {where}",
                               params).fetchone()[0]  # type: ignore[index]
    return deleted


def rewrite(database: Database) -> None:
    """Replace the warehouse file by a copy of its live data (call from the writer's thread).

    The copy is made beside it under a hidden name, fsync'd, then renamed over the file; a
    crash before the rename leaves the old file whole (and the copy is removed next time).
    """
    path = database.path
    fresh = path.with_name(f".{path.name}.rewrite")
    with contextlib.suppress(FileNotFoundError):
        fresh.unlink()
    with contextlib.suppress(FileNotFoundError):
        fresh.with_name(fresh.name + ".wal").unlink()
    database.close()  # checkpoints: the WAL is folded into the file
    try:
        # the server's limits (memory, threads, spill files), and the one right it lacks:
        # ATTACHing the new file
        con = duckdb.connect(str(path), config={**database._config,
                                                "enable_external_access": True})
        try:
            name = con.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
            target = str(fresh).replace("'", "''")
            con.execute(f"ATTACH '{target}' AS __trackd_fresh")
            con.execute(f"COPY FROM DATABASE {quote(name)} TO __trackd_fresh")
            con.execute("DETACH __trackd_fresh")
        finally:
            con.close()
        fd = os.open(fresh, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(fresh, path)
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + ".wal").unlink()
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        database.open()


def _duck(store: Store) -> Database:
    """The DuckDB file behind `store` (erasure runs on the embedded warehouse only)."""
    if not isinstance(store, DuckStore):
        raise TypeError(f"no erasure for the {store.kind} warehouse")
    return store.database


def rewrite_store(store: Store) -> None:
    """`rewrite` the store's file, then open the store on the new one (its macros and
    catalog are per connection). In the loader's thread."""
    rewrite(_duck(store))
    store.open()


class WarehouseErasure:
    """The warehouse's side of a privacy deletion, run in the loader's thread.

    >>> erasure = WarehouseErasure(loader, interrupt=engine.interrupt_all)
    >>> linked = await erasure.linked({"u1"}, None)
    >>> rows = await erasure.erase({"u1"}, linked, None)   # committed on return
    >>> await erasure.rewrite()                             # the bytes are gone on return
    """

    def __init__(self, loader: WarehouseLoader,
                 interrupt: Callable[[str], object] | None = None) -> None:
        self.loader = loader
        self.interrupt = interrupt

    async def linked(self, user_ids: set[str], sources: set[str] | None) -> set[str]:
        return await asyncio.wrap_future(self.loader.submit(
            lambda store: linked_anonymous_ids(_duck(store).writer(), user_ids, sources)))

    async def erase(self, user_ids: set[str], anonymous_ids: set[str],
                    sources: set[str] | None) -> int:
        return await self._in_transaction(
            lambda con: erase(con, user_ids, anonymous_ids, sources))

    async def _in_transaction(self, write: Callable[[duckdb.DuckDBPyConnection], int]) -> int:
        """`write` in one transaction of the loader's connection, in the loader's thread."""
        def job(store: Store) -> int:
            con = _duck(store).writer()
            con.begin()
            try:
                rows = write(con)
                con.commit()
            except BaseException:
                con.rollback()
                raise
            return rows

        return await asyncio.wrap_future(self.loader.submit(job))

    async def expire(self, source: str, cutoff: datetime) -> int:
        return await self._in_transaction(lambda con: expire(con, source, cutoff))

    async def rewrite(self) -> None:
        def job(store: Store) -> None:
            if self.interrupt is not None:
                self.interrupt("because the warehouse file is being rewritten (a deletion)")
            rewrite_store(store)

        await asyncio.wrap_future(self.loader.submit(job))
