"""The PostgreSQL store's "shadow": the in-memory DuckDB where a batch is flattened.

A batch is flattened by the same code as on DuckDB: the shadow's tables mirror the PostgreSQL
catalog, `Batch.write` runs there in a transaction, the rows it produced are taken out as Arrow,
and the transaction is rolled back (the shadow stays empty). So both backends produce the same
tables, names, flattening and types. The ledger rows the batch was judged against (`find`) are
put into the shadow's ledger in that transaction, so a message loaded again after the dedup
window has its row there to extend, as on DuckDB.

`prepare` gives everything the batch's PostgreSQL transaction writes (`Work`), the users and
accounts rows typed and the columns they were typed for included: that transaction runs on the
store's commit thread while the loader flattens the next batch here, which changes the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from trackd.warehouse import ledger, sql
from trackd.warehouse.batch import Batch
from trackd.warehouse.catalog import Catalog
from trackd.warehouse.db import migrate
from trackd.warehouse.naming import quote
from trackd.warehouse.postgres import schema

_PROFILE_TABLES = ("users", "accounts")
# The shadow's bookkeeping rows, as PostgreSQL's columns want them (`tables` as a list, which
# `copy_arrow` writes as text[]).
_LEDGER = {
    "messages": "SELECT key, source, message_id, type, tables, received_at, loaded_at, user_id, "
                "anonymous_id, email FROM _trackd.messages",
    "events": 'SELECT key, source, message_id, type, received_at, "timestamp", user_id, '
              'anonymous_id, body::VARCHAR AS body, shard, "offset" FROM _trackd.events',
    "duplicates": "SELECT * FROM _trackd.duplicates",
}
Config = dict[str, str | bool | int | float | list[str]]


@dataclass
class Upsert:
    """users/accounts rows to merge with what the table has (typed for `columns`)."""

    schema: str
    table: str
    columns: Catalog  # that table alone, with its columns when the batch was flattened
    rows: list[dict[str, Any]]


@dataclass
class Work:
    """A flattened batch: what its PostgreSQL transaction writes."""

    exports: list[tuple[str, pa.Table, bool]]  # (target, rows, merged by id)
    upserts: list[Upsert]
    ledger: pa.Table  # its `_trackd.messages` rows, as `find` returns them


class Shadow:
    """The in-memory DuckDB, and the catalog's tables it has (`synced`)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.synced: schema.Tables = {}
        self._con: duckdb.DuckDBPyConnection | None = None

    def rebuild(self, catalog: Catalog) -> None:
        """A new shadow with `catalog`'s tables."""
        self.close()
        con = duckdb.connect(":memory:", config=self.config)
        migrate(con)
        sql.install(con)
        for statement in schema.duck_ddl(catalog.tables, catalog.tables):
            con.execute(statement)
        self._con = con
        self.synced = schema.copy_tables(catalog.tables)

    def apply(self, new: schema.Tables, catalog: Catalog) -> None:
        """The tables and columns of `new`, which PostgreSQL got too."""
        for statement in schema.duck_ddl(new, catalog.tables):
            self.con().execute(statement)
        self.synced = schema.copy_tables(catalog.tables)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def con(self) -> duckdb.DuckDBPyConnection:
        assert self._con is not None, "the shadow is built when the store opens"
        return self._con

    def prepare(self, batch: Batch, found: list[tuple[Any, ...]],
                catalog: Catalog) -> tuple[int, Work]:
        """Flatten `batch`, judged against the ledger rows `found`: its type conflicts, and
        what its transaction writes."""
        shadow = self.con()
        shadow.begin()
        try:
            seeded = _seed(shadow, found)
            conflicts = batch.write(shadow)
            _unseed(shadow, seeded)
            exports = _exports(shadow, batch)
            written = shadow.sql(f"SELECT {', '.join(ledger.MESSAGES)} "
                                 "FROM _trackd.messages").to_arrow_table()
        finally:
            shadow.rollback()
        return conflicts, Work(exports, _upserts(batch, catalog), written)


def _seed(shadow: duckdb.DuckDBPyConnection, found: list[tuple[Any, ...]]) -> dict[int, set[str]]:
    """Put the ledger rows `find` read for the batch into the shadow's (empty) ledger, in its
    transaction: the batch's update of a message loaded again after the dedup window then finds
    the row and adds the new tables, as on DuckDB. Returns their tables."""
    ledger.insert(shadow, "messages", ledger.MESSAGES, found)
    return {row[0]: set(row[4]) for row in found}


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


def _exports(shadow: duckdb.DuckDBPyConnection,
             batch: Batch) -> list[tuple[str, pa.Table, bool]]:
    """(target, rows, merge by id) for every table the batch wrote, in a fixed order."""
    found: list[tuple[str, pa.Table, bool]] = []
    for schema_name, table in sorted(batch.written):
        if table in _PROFILE_TABLES:
            continue  # merged trait by trait from the batch's merges (`_upserts`)
        target = f"{quote(schema_name)}.{quote(table)}"
        rows = shadow.sql(f"SELECT * FROM {target}").to_arrow_table()
        if rows is not None and rows.num_rows:
            found.append((target, rows, True))
    for name, query in _LEDGER.items():
        rows = shadow.sql(query).to_arrow_table()
        if rows is not None and rows.num_rows:
            found.append((f"_trackd.{name}", rows, False))
    return found


def _upserts(batch: Batch, catalog: Catalog) -> list[Upsert]:
    """users/accounts: the batch's traits typed for their table, with its columns (taken now:
    the catalog changes while the next batch is flattened)."""
    found = []
    for (schema_name, table), merges in sorted(batch.merges.items()):
        raw = [{"id": id_, "received_at": m.received_at, "uuid_ts": batch.now, **m.values}
               for id_, m in merges.items()]
        fitted = catalog.fit(schema_name, table, table, raw, keep_nulls=True)
        if fitted.ddl:  # the shadow's run created them; a difference is a schema move
            raise schema.SchemaMoved(f"{schema_name}.{table} needs columns {fitted.ddl}")
        columns = Catalog(catalog.max_columns)
        columns.tables[(schema_name, table)] = dict(catalog.columns(schema_name, table))
        found.append(Upsert(schema_name, table, columns, fitted.rows))
    return found
