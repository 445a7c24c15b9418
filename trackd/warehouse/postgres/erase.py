"""Privacy deletion and retention in the PostgreSQL warehouse.

The statements are `trackd.warehouse.erasure`'s, run by `PgErasure` as jobs in the loader's
thread, on the loader's write connection (`PgStore.writer`), each in ONE transaction: the id
sets are temporary tables dropped at the commit. Only trackd's tables are touched: `_trackd`
and the schemas of the configured sources (plus, for a deletion, the sources the subjects'
messages were loaded from, by the load ledger): a team's other schemas in the same database are
never looked at.

What this guarantees with several trackd processes loading into one database: the deletion
first takes the schema-change lock (no loader creates a table meanwhile) and locks every table
it deletes from in SHARE ROW EXCLUSIVE mode, so it waits for the loaders' transactions in
flight to commit and keeps new ones out until it commits (queries go on). So every row of the
subjects committed before the deletion commits is gone, whichever process loaded it; and this
process's loader cannot bring one back (its log was erased first, and a batch it had read
before commits before the deletion runs). A batch another process loads after the commit,
from that process's own log, is not covered: a regulation must be sent to every trackd server
that loads into the database (each erases its own log, and the warehouse again).

PostgreSQL does not overwrite deleted rows: their tuples stay in the table's pages until
VACUUM prunes them and the space is reused, and in the WAL (and any WAL archive, replica or
backup) until those are recycled. There is no rewrite step here; docs/privacy.md says what an
operator does to have the bytes gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from trackd.observability import get_logger
from trackd.warehouse import erasure
from trackd.warehouse.erasure import COLUMNS, LoaderErasure, Tables, Target, tables_of
from trackd.warehouse.naming import quote
from trackd.warehouse.postgres import schema
from trackd.warehouse.postgres.store import PgStore

if TYPE_CHECKING:
    from trackd.warehouse.loader import WarehouseLoader
    from trackd.warehouse.store import Store

log = get_logger("warehouse")
ATTEMPTS = 3  # a deadlock with another process's loader aborts one of the two: try again
LOCK_TIMEOUT = 30.0  # seconds one attempt waits for the tables (this server's loader waits too)
RETRY_PAUSE = 30.0  # seconds between attempts while another transaction holds a table
_TEXT = ("text", "character varying")
_TIMES = {"timestamp with time zone": "timestamptz", "timestamp without time zone": "timestamp"}


class PgTarget:
    """`erasure.Target` over a psycopg connection in a transaction; `schemas`: the sources'
    schemas it may touch (besides `_trackd`)."""

    def __init__(self, con: psycopg.Connection[Any], schemas: set[str]) -> None:
        self.con = con
        self.schemas = schemas

    def tables(self) -> Tables:
        return tables_of(self.con.execute(f"{COLUMNS} AND c.table_schema = ANY(%s)", [
            ["_trackd", *sorted(self.schemas)]]).fetchall())

    def lock(self) -> None:
        """Wait for every transaction writing to these tables (another process's loader) to
        end, and keep new ones out until this one commits (SHARE ROW EXCLUSIVE: readers go
        on)."""
        names = [f"{quote(s)}.{quote(t)}" for s, t in sorted(self.tables())]
        if names:
            self.con.execute(f"LOCK TABLE {', '.join(names)} IN SHARE ROW EXCLUSIVE MODE")

    @contextlib.contextmanager
    def ids(self, name: str, values: Iterable[str]) -> Iterator[None]:
        self.con.execute(f"CREATE TEMP TABLE {name} (id text PRIMARY KEY) ON COMMIT DROP")
        with self.con.cursor().copy(f"COPY {name} (id) FROM STDIN") as copy:
            for value in sorted(set(values)):
                copy.write_row((value,))
        self.con.execute(f"ANALYZE {name}")
        yield
        self.con.execute(f"DROP TABLE {name}")

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s")

    def rows(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.con.execute(self._sql(sql), params).fetchall()]

    def delete(self, sql: str, params: list[Any]) -> int:
        return max(self.con.execute(self._sql(sql), params).rowcount, 0)

    def column(self, name: str, kind: str) -> str:
        return quote(name) if kind in _TEXT else f"{quote(name)}::text"

    def older(self, kind: str, cutoff: datetime) -> tuple[str, Any]:
        if kind in _TIMES:  # the session runs in UTC: a naive cutoff is UTC
            return f"received_at < ?::{_TIMES[kind]}", cutoff
        # text (_trackd.load_errors): ISO-8601 UTC strings compare in time order
        return "received_at::text < ?", cutoff.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def subject_sources(con: psycopg.Connection[Any], ids: set[str]) -> set[str]:
    """The sources the load ledger has messages of these ids from (by its indexes)."""
    return {r[0] for r in con.execute(
        "SELECT DISTINCT source FROM _trackd.messages WHERE user_id = ANY(%s) "
        "OR anonymous_id = ANY(%s)", [sorted(ids), sorted(ids)]).fetchall()}


class PgErasure(LoaderErasure):
    """The PostgreSQL warehouse's side of a privacy deletion and of retention.

    >>> erasure = PgErasure(loader, sources=["web", "backend"])
    >>> rows = await erasure.erase({"u1"}, await erasure.linked({"u1"}, None), None)
    """

    def __init__(self, loader: WarehouseLoader, sources: Iterable[str]) -> None:
        super().__init__(loader)
        self.sources = set(sources)

    @contextlib.contextmanager
    def transaction(self, store: Store) -> Iterator[Target]:
        if not isinstance(store, PgStore):
            raise TypeError(f"no PostgreSQL erasure for the {store.kind} warehouse")
        con = store.writer()
        with con.transaction():
            yield PgTarget(con, set(self.sources))

    async def erase(self, user_ids: set[str], anonymous_ids: set[str],
                    sources: set[str] | None) -> int:
        """Delete the subjects' rows; while another transaction holds one of the tables for
        longer than LOCK_TIMEOUT, try again RETRY_PAUSE seconds later (the loader goes on
        meanwhile), for as long as it takes: the regulation stays RUNNING, never hangs."""
        def work(target: Target) -> int:
            assert isinstance(target, PgTarget)
            # no loader creates a table meanwhile, then none writes to these until the commit;
            # a transaction that holds a table for long (not a loader's) makes it try again
            _bound_lock_waits(target)
            target.con.execute("SELECT pg_advisory_xact_lock(%s)", [schema.DDL_LOCK])
            target.schemas |= subject_sources(target.con, user_ids | anonymous_ids)
            if sources is not None:
                target.schemas &= sources
            target.lock()
            return erasure.erase_rows(target, user_ids, anonymous_ids, sources)

        deadlocks, waits = 0, 0
        while True:
            try:
                return await self._job(work)
            except psycopg.errors.LockNotAvailable as exc:
                waits += 1
                log.warning("a warehouse deletion could not lock a table: another transaction "
                            "holds it; trying again later",
                            extra={"error": str(exc).splitlines()[0], "attempt": waits,
                                   "retry_in_seconds": RETRY_PAUSE})
                await asyncio.sleep(RETRY_PAUSE)
            except (psycopg.errors.DeadlockDetected,
                    psycopg.errors.SerializationFailure) as exc:
                deadlocks += 1
                if deadlocks == ATTEMPTS:
                    raise
                log.warning("a warehouse deletion deadlocked with another transaction; "
                            "trying again",
                            extra={"error": str(exc).splitlines()[0], "attempt": deadlocks})

    async def expire(self, source: str, cutoff: datetime) -> int:
        """Retention: a table held for longer than LOCK_TIMEOUT fails this run (the next one
        tries again) instead of holding up the loader."""
        def work(target: Target) -> int:
            _bound_lock_waits(target)
            return erasure.expire_rows(target, source, cutoff)

        return await self._job(work)


def _bound_lock_waits(target: Target) -> None:
    """No statement of this transaction waits more than LOCK_TIMEOUT for a lock."""
    assert isinstance(target, PgTarget)
    target.con.execute(f"SET LOCAL lock_timeout = '{int(LOCK_TIMEOUT * 1000)}ms'")
