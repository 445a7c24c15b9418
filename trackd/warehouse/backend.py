"""Which warehouse runs: `[warehouse] url` empty -> the DuckDB file, else PostgreSQL.

The composition root calls these; every stage gets a `store.Store` and a `QueryEngine` and
never knows which backend it talks to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from trackd.settings import Settings
from trackd.types import QueryEngine
from trackd.warehouse.store import Store

if TYPE_CHECKING:
    from trackd.warehouse.erasure import LoaderErasure, NoErasure
    from trackd.warehouse.loader import WarehouseLoader


def server_backend(settings: Settings, thread_setup: Callable[[], object] | None = None
                   ) -> tuple[Store, QueryEngine]:
    """The store the loader writes and the engine admin queries run on, in the server."""
    wh = settings.warehouse
    max_bytes = int(wh.query_max_mb * 1024 * 1024)
    if wh.url:
        from trackd.warehouse.postgres.query import PgQueryEngine
        from trackd.warehouse.postgres.store import PgStore

        return (PgStore(wh.url, wh.max_columns_per_table, memory_limit_mb=wh.memory_limit_mb,
                        threads=wh.threads),
                PgQueryEngine(wh.query_url or wh.url, timeout=wh.query_timeout,
                              max_rows=wh.query_max_rows, max_bytes=max_bytes,
                              workers=wh.query_workers, thread_setup=thread_setup))
    from trackd.warehouse.db import Database, warehouse_path
    from trackd.warehouse.duckstore import DuckStore
    from trackd.warehouse.query import WarehouseQueryEngine

    database = Database(warehouse_path(settings.data_dir), memory_limit_mb=wh.memory_limit_mb,
                        threads=wh.threads, temp_mb=wh.query_temp_mb)
    return (DuckStore(database, wh.max_columns_per_table),
            WarehouseQueryEngine(database, timeout=wh.query_timeout, max_rows=wh.query_max_rows,
                                 max_bytes=max_bytes, workers=wh.query_workers,
                                 thread_setup=thread_setup))


def server_erasure(settings: Settings, store: Store, loader: WarehouseLoader,
                   engine: QueryEngine) -> LoaderErasure | NoErasure:
    """The privacy side (deletion, retention) of the running store, run by `loader`; a store
    kind without one gets `NoErasure`, whose deletions fail instead of being skipped."""
    from trackd.warehouse.duckstore import DuckStore
    from trackd.warehouse.erasure import NoErasure
    from trackd.warehouse.postgres.store import PgStore

    if isinstance(store, DuckStore):
        from trackd.warehouse.erase import WarehouseErasure

        return WarehouseErasure(loader, interrupt=engine.interrupt_all)
    if isinstance(store, PgStore):
        from trackd.warehouse.postgres.erase import PgErasure

        return PgErasure(loader, [source.name for source in settings.sources])
    return NoErasure(store.kind)


def offline_engine(settings: Settings) -> QueryEngine:
    """Admin queries while no server runs (the DuckDB file opened read-only)."""
    wh = settings.warehouse
    max_bytes = int(wh.query_max_mb * 1024 * 1024)
    if wh.url:
        from trackd.warehouse.postgres.query import PgQueryEngine

        return PgQueryEngine(wh.query_url or wh.url, timeout=wh.query_timeout,
                             max_rows=wh.query_max_rows, max_bytes=max_bytes)
    from trackd.warehouse.db import Database, warehouse_path
    from trackd.warehouse.query import WarehouseQueryEngine

    database = Database(warehouse_path(settings.data_dir), read_only=True,
                        temp_mb=wh.query_temp_mb)
    database.open()
    return WarehouseQueryEngine(database, timeout=wh.query_timeout, max_rows=wh.query_max_rows,
                                max_bytes=max_bytes)


def offline_store(settings: Settings) -> Store | None:
    """The warehouse for reading while no server runs, opened; None when there is none yet."""
    if settings.warehouse.url:
        from trackd.warehouse.postgres.store import PgStore

        store = PgStore(settings.warehouse.url)
        store.open_reading()
        return store
    from trackd.warehouse.db import Database, warehouse_path
    from trackd.warehouse.duckstore import DuckStore

    database = Database(warehouse_path(settings.data_dir), read_only=True)
    if not database.path.exists():
        return None
    database.open()
    return DuckStore(database)
