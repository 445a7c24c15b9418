"""The PostgreSQL warehouse behind the seam (`store.Store`): Segment's schema, exactly once.

A batch is flattened by the same code as on DuckDB, in an in-memory DuckDB (the "shadow")
whose tables mirror the PostgreSQL catalog: `Batch.write` runs there in a transaction, the rows
it produced are taken out as Arrow, and the shadow transaction is rolled back (it stays empty).
So both backends produce the same tables, names, flattening and types. The ledger rows the batch
was judged against (`find`) are put into the shadow's ledger in that transaction, so a message
loaded again after the dedup window has its row there to extend, as on DuckDB. Then:

1. new tables and columns are created in PostgreSQL in a short transaction of their own under
   an advisory lock (`schema.apply_changes`: IF NOT EXISTS; a column another loader created
   first with another type makes this loader re-read the catalog and flatten again);
2. in ONE PostgreSQL transaction: each table's rows are COPYed (CSV written by Arrow) into a
   temporary staging table and merged with `INSERT ... ON CONFLICT (id) DO NOTHING`, so an id
   already present is skipped, whether it was loaded by this loader before (redelivery,
   replay) or by another loader at the same moment (the second waits for the first's commit,
   then skips); users/accounts are merged trait by trait under a per-table advisory lock; the
   ledger, profile events, duplicates and the log position are written; COMMIT.

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

import duckdb
import psycopg
import pyarrow as pa

from trackd.errors import ConfigError
from trackd.log.records import Position
from trackd.observability import get_logger
from trackd.warehouse import ledger, sql
from trackd.warehouse.batch import Batch
from trackd.warehouse.catalog import MAX_COLUMNS, Catalog
from trackd.warehouse.db import migrate
from trackd.warehouse.ledger import DUPLICATE_RETENTION, EVENT_RETENTION, Loaded
from trackd.warehouse.naming import quote
from trackd.warehouse.postgres import schema
from trackd.warehouse.postgres.connect import PgReader, connect, where
from trackd.warehouse.postgres.copying import copy_arrow
from trackd.warehouse.store import Reader
from trackd.warehouse.upsert import merged
from trackd.warehouse.violations import TABLE as VIOLATIONS
from trackd.warehouse.violations import ViolationLoader, arrow

log = get_logger("warehouse")
ATTEMPTS = 3  # flattening again after another loader moved the schema
_PROFILE_TABLES = ("users", "accounts")
_APPEND_ONLY = ("_trackd.events", "_trackd.duplicates")  # no key: copied as they are
# The shadow's bookkeeping rows, as PostgreSQL's columns want them (`tables` as a list, which
# `copy_arrow` writes as text[]).
_LEDGER = {
    "messages": "SELECT key, source, message_id, type, tables, received_at, loaded_at, user_id, "
                "anonymous_id, email FROM _trackd.messages",
    "events": 'SELECT key, source, message_id, type, received_at, "timestamp", user_id, '
              'anonymous_id, body::VARCHAR AS body, shard, "offset" FROM _trackd.events',
    "duplicates": "SELECT * FROM _trackd.duplicates",
}


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

    def __init__(self, url: str, max_columns: int = MAX_COLUMNS, *, memory_limit_mb: int = 0,
                 threads: int = 0) -> None:
        self.url = url
        self.catalog = Catalog(max_columns=max_columns)
        self._shadow_config: dict[str, str | bool | int | float | list[str]] = {
            "enable_external_access": False, "autoinstall_known_extensions": False,
            "autoload_known_extensions": False}
        if memory_limit_mb > 0:
            self._shadow_config["memory_limit"] = f"{memory_limit_mb}MB"
        if threads > 0:
            self._shadow_config["threads"] = threads
        self._con: psycopg.Connection[Any] | None = None
        self._shadow: duckdb.DuckDBPyConnection | None = None
        self._synced: schema.Tables = {}
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
        if self._con is not None:
            self._con.close()
            self._con = None
        if self._shadow is not None:
            self._shadow.close()
            self._shadow = None

    def writer(self) -> psycopg.Connection[Any]:
        """The write connection, in autocommit: for jobs in the loader's thread (privacy
        erasure), which open their own transaction on it."""
        return self._writer()

    def _writer(self) -> psycopg.Connection[Any]:
        """The write connection; a new one (and the catalog read again) when the server closed
        the last one (a restart, a failover): the failed batch is retried on it."""
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
        if self._shadow is not None:
            self._shadow.close()
        shadow = duckdb.connect(":memory:", config=self._shadow_config)
        migrate(shadow)
        sql.install(shadow)
        for statement in schema.duck_ddl(self.catalog.tables, self.catalog.tables):
            shadow.execute(statement)
        self._shadow = shadow
        self._synced = schema.copy_tables(self.catalog.tables)

    # -- writing ----------------------------------------------------------------------------
    def position(self) -> Position:
        return {shard: int(offset) for shard, offset in self._writer().execute(
            'SELECT shard, "offset" FROM _trackd.offsets').fetchall()}

    def find(self, keys: Iterable[int]) -> dict[int, Loaded]:
        wanted = sorted(set(keys))
        if not wanted:
            self._found = []
            return {}
        rows = self._writer().execute(
            f"SELECT {', '.join(ledger.MESSAGES)} FROM _trackd.messages WHERE key = ANY(%s)",
            [wanted]).fetchall()
        self._found = [tuple(r) for r in rows]  # for the batch judged against them (`_seed`)
        return {r[0]: Loaded(r[0], r[1], r[2], r[3], list(r[4]), r[5], r[6]) for r in rows}

    def load(self, batch: Batch, position: Position) -> int:
        for attempt in range(ATTEMPTS):
            try:
                return self._write(batch, position, keep=True)
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

    def try_load(self, batch: Batch) -> None:
        try:
            self._write(batch, None, keep=False)
        finally:
            self._recover()

    def _recover(self) -> None:
        with contextlib.suppress(Exception):
            self._resync()

    def _write(self, batch: Batch, position: Position | None, *, keep: bool) -> int:
        con, shadow = self._writer(), self._shadow
        assert shadow is not None
        shadow.begin()
        try:
            seeded = self._seed(shadow)
            conflicts = batch.write(shadow)
            self._unseed(shadow, seeded)
            exports = self._exports(shadow, batch)
        finally:
            shadow.rollback()
        new = schema.changes(self.catalog.tables, self._synced)
        if new and keep:
            with con.transaction():
                schema.apply_changes(con, new, self.catalog.tables)
            for statement in schema.duck_ddl(new, self.catalog.tables):
                shadow.execute(statement)
            self._synced = schema.copy_tables(self.catalog.tables)
        with con.transaction(force_rollback=not keep):  # the canary's is rolled back
            if new and not keep:
                schema.apply_changes(con, new, self.catalog.tables)
            self._merge(con, exports)
            self._upsert(con, batch)
            if position:
                self._save_position(con, position)
        return conflicts

    def _seed(self, shadow: duckdb.DuckDBPyConnection) -> dict[int, set[str]]:
        """Put the ledger rows `find` read for the batch into the shadow's (empty) ledger, in
        its transaction: the batch's update of a message loaded again after the dedup window
        then finds the row and adds the new tables, as on DuckDB. Returns their tables."""
        ledger.insert(shadow, "messages", ledger.MESSAGES, self._found)
        return {row[0]: set(row[4]) for row in self._found}

    @staticmethod
    def _unseed(shadow: duckdb.DuckDBPyConnection, seeded: dict[int, set[str]]) -> None:
        """Drop the seeded rows the batch left as they were (its duplicates): only new and
        extended ledger rows are exported (the merge adds an extended row's tables)."""
        if not seeded:
            return
        found = shadow.execute("SELECT key, tables FROM _trackd.messages "
                               "WHERE key IN (SELECT unnest(?::BIGINT[]))",
                               [sorted(seeded)]).fetchall()
        same = [key for key, tables in found if set(tables) == seeded[key]]
        if same:
            shadow.execute("DELETE FROM _trackd.messages WHERE key IN "
                           "(SELECT unnest(?::BIGINT[]))", [same])

    def _exports(self, shadow: duckdb.DuckDBPyConnection,
                 batch: Batch) -> list[tuple[str, pa.Table, bool]]:
        """(target, rows, merge by id) for every table the batch wrote, in a fixed order."""
        found: list[tuple[str, pa.Table, bool]] = []
        for schema_name, table in sorted(batch.written):
            if table in _PROFILE_TABLES:
                continue  # merged trait by trait from the batch's merges (`_upsert`)
            target = f"{quote(schema_name)}.{quote(table)}"
            rows = shadow.sql(f"SELECT * FROM {target}").to_arrow_table()
            if rows is not None and rows.num_rows:
                found.append((target, rows, True))
        for name, query in _LEDGER.items():
            rows = shadow.sql(query).to_arrow_table()
            if rows is not None and rows.num_rows:
                found.append((f"_trackd.{name}", rows, False))
        return found

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
            copy_arrow(con, stage, rows)
            columns = ", ".join(quote(c) for c in rows.column_names)
            if by_id:  # in id order: loaders taking the same ids lock them in the same order
                con.execute(f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {stage} "
                            "ORDER BY id ON CONFLICT (id) DO NOTHING")
            else:
                con.execute(f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {stage} "
                            "ORDER BY key ON CONFLICT (key) DO UPDATE SET tables = ARRAY("
                            "SELECT DISTINCT unnest(_trackd.messages.tables || "
                            "EXCLUDED.tables) ORDER BY 1)")

    def _upsert(self, con: psycopg.Connection[Any], batch: Batch) -> None:
        """users/accounts: each id's row merged with the batch's traits (`upsert.merged`)."""
        for (schema_name, table), merges in sorted(batch.merges.items()):
            target = f"{quote(schema_name)}.{quote(table)}"
            con.execute("SELECT pg_advisory_xact_lock(%s)", [lock_key(schema_name, table)])
            columns = self.catalog.columns(schema_name, table)
            schema.check_columns(con, schema_name, table, columns, exact=True)
            raw = [{"id": id_, "received_at": m.received_at, "uuid_ts": batch.now, **m.values}
                   for id_, m in merges.items()]
            fitted = self.catalog.fit(schema_name, table, table, raw, keep_nulls=True)
            if fitted.ddl:  # the shadow's run created them; a difference is a schema move
                raise schema.SchemaMoved(f"{schema_name}.{table} needs columns {fitted.ddl}")
            ids = list(merges)
            cursor = con.execute(f"SELECT * FROM {target} WHERE id = ANY(%s) FOR UPDATE", [ids])
            names = [d.name for d in cursor.description or ()]
            existing = {row[0]: dict(zip(names, map(_naive, row), strict=True))
                        for row in cursor.fetchall()}
            rows = [merged(existing.get(patch["id"], {}), patch) for patch in fitted.rows]
            con.execute(f"DELETE FROM {target} WHERE id = ANY(%s)", [ids])
            copy_arrow(con, target, self.catalog.arrow(schema_name, table, rows))

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
        con = self._writer()
        if violations.position is None:
            violations.position = {shard: int(last) for shard, last in con.execute(
                "SELECT shard, last_id FROM _trackd.violation_offsets").fetchall()}
        pending = violations.read()
        if pending is None:
            return 0
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
