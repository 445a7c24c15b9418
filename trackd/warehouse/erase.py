"""Privacy deletion in the DuckDB warehouse: every table, then a rewrite of the file.

The statements are `trackd.warehouse.erasure`'s (the same on PostgreSQL), run here on the
loader's DuckDB write connection (`DuckTarget`): `linked_anonymous_ids` (the identity graph),
`erase` (every row of the subjects, in ONE transaction), `expire` (retention). They run in the
loader's thread (`WarehouseLoader.submit`).

DuckDB keeps deleted rows' bytes in blocks it frees but does not overwrite, so `rewrite`
copies the live database into a new file (`COPY FROM DATABASE`), which then replaces the old
one: only when it has run are the bytes gone. It closes the connections (admin queries running
then are interrupted first, and a query asked meanwhile waits or fails with "not open").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from trackd.observability import get_logger
from trackd.private import fsync_path
from trackd.warehouse import erasure
from trackd.warehouse.db import Database, registered
from trackd.warehouse.duckstore import DuckStore
from trackd.warehouse.erasure import COLUMNS, LoaderErasure, Tables, tables_of
from trackd.warehouse.naming import quote

if TYPE_CHECKING:
    from trackd.warehouse.loader import WarehouseLoader
    from trackd.warehouse.store import Store

log = get_logger("warehouse")


def _ids(values: Iterable[str]) -> pa.Table:
    return pa.table({"id": pa.array(sorted(set(values)), pa.string())})


class DuckTarget:
    """`erasure.Target` over a DuckDB connection (the caller holds the transaction)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def tables(self) -> Tables:
        return tables_of(self.con.execute(COLUMNS).fetchall())

    def ids(self, name: str, values: Iterable[str]) -> contextlib.AbstractContextManager[object]:
        return registered(self.con, name, _ids(values))

    def rows(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        return self.con.execute(sql, params).fetchall()

    def delete(self, sql: str, params: list[Any]) -> int:
        return int(self.con.execute(sql, params).fetchone()[0])  # type: ignore[index]

    def column(self, name: str, kind: str) -> str:
        return name

    def older(self, kind: str, cutoff: datetime) -> tuple[str, Any]:
        return "TRY_CAST(received_at AS TIMESTAMP) < ?::TIMESTAMP", cutoff


def linked_anonymous_ids(con: duckdb.DuckDBPyConnection, user_ids: set[str],
                         sources: set[str] | None) -> set[str]:
    """Anonymous ids (and alias previous ids) that the users' loaded calls linked to them."""
    return erasure.linked_anonymous_ids(DuckTarget(con), user_ids, sources)


def erase(con: duckdb.DuckDBPyConnection, user_ids: set[str], anonymous_ids: set[str],
          sources: set[str] | None) -> int:
    """Delete every row of the subjects (call inside a transaction); returns rows deleted."""
    return erasure.erase_rows(DuckTarget(con), user_ids, anonymous_ids, sources)


def expire(con: duckdb.DuckDBPyConnection, source: str, cutoff: datetime) -> int:
    """Delete a source's rows received before `cutoff` (UTC, naive) from its tables and from
    trackd's own (call inside a transaction); returns rows deleted. Retention."""
    return erasure.expire_rows(DuckTarget(con), source, cutoff)


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
        fsync_path(fresh)
        os.replace(fresh, path)
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + ".wal").unlink()
        fsync_path(path.parent)
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


class WarehouseErasure(LoaderErasure):
    """The DuckDB warehouse's side of a privacy deletion, run in the loader's thread; the
    bytes of deleted rows are gone once `rewrite` has run.

    >>> erasure = WarehouseErasure(loader, interrupt=engine.interrupt_all)
    >>> linked = await erasure.linked({"u1"}, None)
    >>> rows = await erasure.erase({"u1"}, linked, None)   # committed on return
    >>> await erasure.rewrite()                             # the bytes are gone on return
    """

    rewrites = True

    def __init__(self, loader: WarehouseLoader,
                 interrupt: Callable[[str], object] | None = None) -> None:
        super().__init__(loader)
        self.interrupt = interrupt

    @contextlib.contextmanager
    def transaction(self, store: Store) -> Iterator[DuckTarget]:
        con = _duck(store).writer()
        con.begin()
        try:
            yield DuckTarget(con)
            con.commit()
        except BaseException:
            con.rollback()
            raise

    async def rewrite(self) -> None:
        def job(store: Store) -> None:
            if self.interrupt is not None:
                self.interrupt("because the warehouse file is being rewritten (a deletion)")
            rewrite_store(store)

        await asyncio.wrap_future(self.loader.submit(job))
