"""The PostgreSQL warehouse behind the seam (`store.Store`): Segment's schema, exactly once.

A batch is flattened by the same code as on DuckDB, in an in-memory DuckDB (the "shadow",
`postgres.shadow`) whose tables mirror the PostgreSQL catalog, and taken out as Arrow. Then:

1. new tables and columns are created in PostgreSQL in a short transaction of their own under
   an advisory lock (`schema.apply_changes`: IF NOT EXISTS; a column another loader created
   first with another type makes this loader re-read the catalog and flatten again);
2. in ONE PostgreSQL transaction: each table's rows are COPYed (binary COPY built from the Arrow
   columns, `copying`), straight into the table when none of its ids is there yet, else into a
   temporary staging table merged with `INSERT ... ON CONFLICT (id) DO NOTHING`, so an id
   already present is skipped, whether it was loaded by this loader before (redelivery,
   replay) or by another loader at the same moment (the second waits for the first's commit,
   then skips); users/accounts are merged trait by trait under a per-table advisory lock; the
   ledger, profile events, duplicates and the log position are written; COMMIT.

Step 2 runs on the store's commit thread (`commits`): `load` returns once it started, the loader
reads and flattens the next batch meanwhile, and acknowledges this one after `settle` said it
committed. The next batch's `load` waits for it before its own step 1 (schema changes too run
on the write connection only when no transaction is in flight), and starts nothing if it
failed; its dedup (`find`) reads the committed ledger on a connection of its own and adds the
ledger rows of the batch still committing.

A crash before the COMMIT keeps nothing of the batch but the (harmless) empty columns; the
position in `_trackd.offsets` is in the same transaction, so with the SQLite log the next start
resumes exactly after the last committed batch, as on DuckDB.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pyarrow as pa

from trackd.errors import ConfigError
from trackd.log.records import Position
from trackd.observability import get_logger
from trackd.warehouse import ledger
from trackd.warehouse.batch import Batch
from trackd.warehouse.catalog import MAX_COLUMNS, Catalog
from trackd.warehouse.ledger import DUPLICATE_RETENTION, EVENT_RETENTION, Loaded
from trackd.warehouse.naming import quote
from trackd.warehouse.postgres import schema
from trackd.warehouse.postgres.commits import Commits
from trackd.warehouse.postgres.connect import PgReader, connect, where
from trackd.warehouse.postgres.copying import copy_arrow
from trackd.warehouse.postgres.shadow import Config, Shadow, Upsert, Work
from trackd.warehouse.store import Reader
from trackd.warehouse.upsert import merged
from trackd.warehouse.violations import TABLE as VIOLATIONS
from trackd.warehouse.violations import ViolationLoader, arrow

log = get_logger("warehouse")
ATTEMPTS = 3  # flattening again after another loader moved the schema
_APPEND_ONLY = ("_trackd.events", "_trackd.duplicates")  # no key: copied as they are


def lock_key(*names: str) -> int:
    """A signed 64-bit advisory lock key for `names`."""
    digest = hashlib.blake2b("\x00".join(names).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _naive(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


class PgStore:
    """`Store` over the PostgreSQL database at `url` (a libpq URL or conninfo)."""

    kind = "postgresql"
    overlap = 1  # `load` returns before the COMMIT: see `settle`

    def __init__(self, url: str, max_columns: int = MAX_COLUMNS, *, memory_limit_mb: int = 0,
                 threads: int = 0) -> None:
        self.url = url
        self.catalog = Catalog(max_columns=max_columns)
        config: Config = {"enable_external_access": False,
                          "autoinstall_known_extensions": False,
                          "autoload_known_extensions": False}
        if memory_limit_mb > 0:
            config["memory_limit"] = f"{memory_limit_mb}MB"
        if threads > 0:
            config["threads"] = threads
        self._shadow = Shadow(config)
        self._con: psycopg.Connection[Any] | None = None
        self._lookup: psycopg.Connection[Any] | None = None  # `find`'s, beside the writer's
        self._commits = Commits()
        self._found: list[tuple[Any, ...]] = []  # the ledger rows the last `find` read
        self._open = False

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> None:
        """Connect for writing, create `_trackd`, read the catalog, build the shadow."""
        con = connect(self.url, autocommit=True)
        try:
            with con.transaction():
                con.execute("SELECT pg_advisory_xact_lock(%s)", [schema.DDL_LOCK])
                for statement in schema.BOOKKEEPING:
                    con.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            con.close()
            raise ConfigError(
                f"the PostgreSQL user may not create schemas ({where(self.url)}): grant it "
                "CREATE on the database (GRANT CREATE ON DATABASE ... TO ...)") from None
        except psycopg.Error as exc:
            con.close()
            raise ConfigError(f"cannot prepare the PostgreSQL warehouse ({where(self.url)}): "
                              f"{str(exc).strip().splitlines()[0]}") from None
        self._con = con
        self._resync()
        self._open = True

    def open_reading(self) -> None:
        """For commands without a server: check the database answers and has a warehouse."""
        with connect(self.url) as con:
            found = con.execute("SELECT to_regclass('_trackd.messages')").fetchone()
        if not found or found[0] is None:
            raise ConfigError(f"no trackd warehouse in {where(self.url)} yet: it is created "
                              "when the server loads its first events")
        self._open = True

    def close(self) -> None:
        self._open = False
        self._commits.close()
        for con in (self._con, self._lookup):
            if con is not None:
                con.close()
        self._con = self._lookup = None
        self._shadow.close()

    def writer(self) -> psycopg.Connection[Any]:
        """The write connection, in autocommit: for jobs in the loader's thread (privacy
        erasure), which open their own transaction on it."""
        return self._writer()

    def _writer(self) -> psycopg.Connection[Any]:
        """The write connection, once no batch is committing on it; a new one (and the catalog
        read again) when the server closed the last one (a restart, a failover): the failed
        batch is retried on it."""
        self._commits.wait()
        if self._con is None:
            raise ConfigError("the warehouse is not open for writing")
        if self._con.closed or self._con.broken:
            log.warning("the PostgreSQL warehouse connection was lost; reconnecting",
                        extra={"server": where(self.url)})
            with contextlib.suppress(psycopg.Error):
                self._con.close()
            self._con = connect(self.url, autocommit=True)
            self._resync()
        return self._con

    def _resync(self) -> None:
        """Read the catalog from PostgreSQL and rebuild the shadow to match it."""
        schema.load_catalog(self._writer(), self.catalog)
        self._shadow.rebuild(self.catalog)

    # -- writing ----------------------------------------------------------------------------
    def position(self) -> Position:
        return {shard: int(offset) for shard, offset in self._writer().execute(
            'SELECT shard, "offset" FROM _trackd.offsets').fetchall()}

    def find(self, keys: Iterable[int]) -> dict[int, Loaded]:
        """Ledger entries: those committed, and those of the batch still committing (newer)."""
        wanted = sorted(set(keys))
        if not wanted:
            self._found = []
            return {}
        found = {row[0]: tuple(row) for row in self._committed_ledger(wanted)}
        found.update((row[0], row) for row in self._commits.ledger(pa.array(wanted, pa.int64())))
        self._found = list(found.values())  # for the batch judged against them (`_seed`)
        return {r[0]: Loaded(r[0], r[1], r[2], r[3], list(r[4]), r[5], r[6])
                for r in self._found}

    def _committed_ledger(self, wanted: list[int]) -> list[tuple[Any, ...]]:
        """The committed ledger rows of these keys, read on `find`'s own connection (the write
        connection may be committing a batch); connected again if the server dropped it."""
        query = (f"SELECT {', '.join(ledger.MESSAGES)} FROM _trackd.messages "
                 "WHERE key = ANY(%s::bigint[])")
        keys = "{" + ",".join(map(str, wanted)) + "}"  # one literal: 4x less CPU than a list
        for attempt in range(2):
            con = self._lookup
            if con is None or con.closed or con.broken:
                self._lookup = con = connect(self.url, autocommit=True)
            try:
                return [tuple(r) for r in con.execute(query, [keys]).fetchall()]
            except psycopg.OperationalError:
                if attempt or not con.broken:
                    raise
        raise AssertionError("unreachable")

    def load(self, batch: Batch, position: Position) -> int:
        """Flatten `batch` and start its transaction on the commit thread; returns before the
        COMMIT (`settle` waits for it). Nothing is started if the batch before failed (its
        `settle` raises, and this one is loaded again)."""
        for attempt in range(ATTEMPTS):
            try:
                return self._load(batch, position)
            except schema.SchemaMoved as exc:
                log.info("another loader changed the schema; loading the batch again",
                         extra={"change": str(exc), "attempt": attempt + 1})
                self._resync()
                if attempt == ATTEMPTS - 1:
                    raise
            except BaseException:
                self._recover()
                raise
        raise AssertionError("unreachable")

    def settle(self) -> None:
        """Wait for the COMMIT of the oldest batch `load` started; raise what it raised."""
        try:
            self._commits.settle()
        except BaseException:
            self._recover()
            raise

    def try_load(self, batch: Batch) -> None:
        try:
            _, work = self._shadow.prepare(batch, [], self.catalog)  # judged against nothing
            con = self._writer()
            new = schema.changes(self.catalog.tables, self._shadow.synced)
            with con.transaction(force_rollback=True):  # the canary's: nothing is kept
                if new:
                    schema.apply_changes(con, new, self.catalog.tables)
                self._transaction(con, work, None)
        finally:
            self._recover()

    def _recover(self) -> None:
        with contextlib.suppress(Exception):
            self._resync()

    def _load(self, batch: Batch, position: Position) -> int:
        conflicts, work = self._shadow.prepare(batch, self._found, self.catalog)
        if not self._commits.wait():
            return conflicts  # that one failed: `settle` raises, and this one comes again
        con = self._writer()
        new = schema.changes(self.catalog.tables, self._shadow.synced)
        if new:
            with con.transaction():
                schema.apply_changes(con, new, self.catalog.tables)
            self._shadow.apply(new, self.catalog)
        self._commits.start(lambda: self._commit(con, work, position), work.ledger)
        return conflicts

    def _commit(self, con: psycopg.Connection[Any], work: Work, position: Position) -> None:
        """The batch's transaction (on the commit thread)."""
        with con.transaction():
            self._transaction(con, work, position)

    def _transaction(self, con: psycopg.Connection[Any], work: Work,
                     position: Position | None) -> None:
        self._merge(con, work.exports)
        self._upsert(con, work.upserts)
        if position:
            self._save_position(con, position)

    def _merge(self, con: psycopg.Connection[Any], exports: list[tuple[str, pa.Table, bool]]
               ) -> None:
        for i, (target, rows, by_id) in enumerate(exports):
            if target in _APPEND_ONLY:
                copy_arrow(con, target, rows)
                continue
            # Most batches are new: COPY straight into the table, in a savepoint. An id that is
            # there already (a redelivery, a replay, another loader's commit) fails the COPY on
            # the primary key; the savepoint then goes and the rows take the staging path.
            # Rows go in key order, so loaders inserting the same ids at once wait for each
            # other in one order and never deadlock.
            rows = rows.sort_by("id" if by_id else "key")
            try:
                with con.transaction():
                    copy_arrow(con, target, rows)
                continue
            except psycopg.errors.UniqueViolation:
                pass
            stage = f"__trackd_stage_{i}"
            con.execute(f"CREATE TEMP TABLE {stage} (LIKE {target}) ON COMMIT DROP")
            copy_arrow(con, stage, rows, like=target)
            columns = ", ".join(quote(c) for c in rows.column_names)
            if by_id:  # in id order: loaders taking the same ids lock them in the same order
                con.execute(f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {stage} "
                            "ORDER BY id ON CONFLICT (id) DO NOTHING")
            else:
                con.execute(f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {stage} "
                            "ORDER BY key ON CONFLICT (key) DO UPDATE SET tables = ARRAY("
                            "SELECT DISTINCT unnest(_trackd.messages.tables || "
                            "EXCLUDED.tables) ORDER BY 1)")

    @staticmethod
    def _upsert(con: psycopg.Connection[Any], upserts: list[Upsert]) -> None:
        """users/accounts: each id's row merged with the batch's traits (`upsert.merged`)."""
        for up in upserts:
            schema_name, table = up.schema, up.table
            target = f"{quote(schema_name)}.{quote(table)}"
            con.execute("SELECT pg_advisory_xact_lock(%s)", [lock_key(schema_name, table)])
            schema.check_columns(con, schema_name, table, up.columns.columns(schema_name, table),
                                 exact=True)
            ids = [patch["id"] for patch in up.rows]
            cursor = con.execute(f"SELECT * FROM {target} WHERE id = ANY(%s) FOR UPDATE", [ids])
            names = [d.name for d in cursor.description or ()]
            existing = {row[0]: dict(zip(names, map(_naive, row), strict=True))
                        for row in cursor.fetchall()}
            rows = [merged(existing.get(patch["id"], {}), patch) for patch in up.rows]
            con.execute(f"DELETE FROM {target} WHERE id = ANY(%s)", [ids])
            copy_arrow(con, target, up.columns.arrow(schema_name, table, rows))

    @staticmethod
    def _save_position(con: psycopg.Connection[Any], position: Position) -> None:
        with con.cursor() as cursor:
            cursor.executemany(
                'INSERT INTO _trackd.offsets (shard, "offset") VALUES (%s, %s) '
                'ON CONFLICT (shard) DO UPDATE SET "offset" = EXCLUDED."offset"',
                list(position.items()))

    def record_errors(self, rows: list[tuple[Any, ...]], position: Position) -> None:
        con = self._writer()
        with con.transaction(), con.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO _trackd.load_errors (source, message_id, type, received_at, "
                'failed_at, error, shard, "offset") VALUES (%s, %s, %s, %s, %s, %s, %s, %s)',
                rows)
            self._save_position(con, position)

    def prune(self, now: datetime) -> None:
        con = self._writer()
        with con.transaction():
            con.execute("DELETE FROM _trackd.events WHERE type NOT IN ('identify', 'group') "
                        "AND received_at < %s", [now - EVENT_RETENTION])
            con.execute("DELETE FROM _trackd.duplicates WHERE seen_at < %s",
                        [now - DUPLICATE_RETENTION])

    def load_violations(self, violations: ViolationLoader) -> int:
        """Each round: the write connection is taken (waiting for a batch committing on it)
        only when the log has violations to load."""
        if violations.position is None:
            violations.position = {shard: int(last) for shard, last in self._writer().execute(
                "SELECT shard, last_id FROM _trackd.violation_offsets").fetchall()}
        pending = violations.read()
        if pending is None:
            return 0
        con = self._writer()
        by_source, position, count = pending
        with con.transaction():
            for source, items in sorted(by_source.items()):
                target = f"{quote(source)}.{quote(VIOLATIONS)}"
                if (source, VIOLATIONS) not in self.catalog.tables:
                    con.execute("SELECT pg_advisory_xact_lock(%s)", [schema.DDL_LOCK])
                    con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(source)}")
                    con.execute(schema.VIOLATIONS_DDL.format(target=target))
                copy_arrow(con, target, arrow(items))
            with con.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO _trackd.violation_offsets VALUES (%s, %s) ON CONFLICT (shard) "
                    "DO UPDATE SET last_id = EXCLUDED.last_id", list(position.items()))
        violations.position = position
        return count

    # -- reading ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def reading(self) -> Iterator[Reader]:
        """A read-only transaction on a connection of its own, closed afterwards."""
        with connect(self.url) as con:
            con.read_only = True
            try:
                with con.cursor() as cursor:
                    yield PgReader(cursor)
            finally:
                con.rollback()
