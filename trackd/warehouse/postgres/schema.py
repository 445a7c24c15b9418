"""The PostgreSQL warehouse's schema: column types, trackd's bookkeeping, DDL under a lock.

Types (the contract's): VARCHAR -> `text`, BIGINT -> `bigint`, DOUBLE -> `double precision`,
BOOLEAN -> `boolean`, TIMESTAMP -> `timestamptz`, and `jsonb` for `_type_conflicts` and
`_overflow`. Every table with an `id` has it as its primary key: the merge of a batch skips ids
already present, so a table never holds a messageId twice (users/accounts: one row per id).

Schema changes (CREATE SCHEMA/TABLE, ADD COLUMN) run in their own short transaction under a
transaction-level advisory lock (`DDL_LOCK`), with IF NOT EXISTS, so loaders adding the same
table or column at once agree; a column another loader created first with another type wins,
and the loader that lost re-reads the catalog and loads its batch again (`SchemaMoved`).
"""

from __future__ import annotations

from typing import Any

import psycopg

from trackd.warehouse.catalog import INTERNAL_SCHEMAS, Catalog
from trackd.warehouse.naming import quote
from trackd.warehouse.values import ColumnType

DDL_LOCK = 0x7472_6B64_0001  # pg_advisory_xact_lock key for schema changes ("trkd" 1)
UPSERT_LOCK = 0x7472_6B64_0002  # ... and, with the table's hash, for users/accounts merges
PG_TYPES: dict[str, str] = {
    ColumnType.VARCHAR: "text", ColumnType.BIGINT: "bigint",
    ColumnType.DOUBLE: "double precision", ColumnType.BOOLEAN: "boolean",
    ColumnType.TIMESTAMP: "timestamptz", ColumnType.JSON: "jsonb",
}
_BACK = {"text": ColumnType.VARCHAR, "character varying": ColumnType.VARCHAR,
         "bigint": ColumnType.BIGINT, "integer": ColumnType.BIGINT,
         "double precision": ColumnType.DOUBLE, "boolean": ColumnType.BOOLEAN,
         "timestamp with time zone": ColumnType.TIMESTAMP,
         "timestamp without time zone": ColumnType.TIMESTAMP,
         "jsonb": ColumnType.JSON, "json": ColumnType.JSON}

# Indexes only where the readers need them (every index costs each load): the ledger's key
# (dedup, "where is my event"), and the identifiers the Profile API resolves profiles by and
# privacy deletion finds a user's sources by. Those are partial (WHERE ... IS NOT NULL): a
# lookup is always by a value, and most messages lack one of them (server-side calls have no
# anonymousId, most calls no email), so a load does not pay for entries no query reads.
# Warehouses made before then have full indexes under the old names: they are replaced.
BOOKKEEPING = (
    "CREATE SCHEMA IF NOT EXISTS _trackd",
    'CREATE TABLE IF NOT EXISTS _trackd.offsets (shard text PRIMARY KEY, "offset" bigint '
    "NOT NULL)",
    "CREATE TABLE IF NOT EXISTS _trackd.messages (key bigint PRIMARY KEY, source text NOT NULL, "
    "message_id text NOT NULL, type text NOT NULL, tables text[] NOT NULL, "
    "received_at timestamp NOT NULL, loaded_at timestamp NOT NULL, user_id text, "
    "anonymous_id text, email text)",
    "DROP INDEX IF EXISTS _trackd.messages_user_id",
    "CREATE INDEX IF NOT EXISTS messages_user_id_set ON _trackd.messages (user_id) "
    "WHERE user_id IS NOT NULL",
    "DROP INDEX IF EXISTS _trackd.messages_anonymous_id",
    "CREATE INDEX IF NOT EXISTS messages_anonymous_id_set ON _trackd.messages (anonymous_id) "
    "WHERE anonymous_id IS NOT NULL",
    "DROP INDEX IF EXISTS _trackd.messages_email",
    "CREATE INDEX IF NOT EXISTS messages_email_set ON _trackd.messages (email) "
    "WHERE email IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS _trackd.duplicates (source text NOT NULL, message_id text NOT "
    "NULL, type text NOT NULL, received_at timestamp, seen_at timestamp NOT NULL, "
    'original_received_at timestamp, original_loaded_at timestamp, shard text NOT NULL, '
    '"offset" bigint NOT NULL)',
    "CREATE INDEX IF NOT EXISTS duplicates_message_id ON _trackd.duplicates (message_id)",
    "CREATE TABLE IF NOT EXISTS _trackd.load_errors (source text NOT NULL, message_id text NOT "
    "NULL, type text NOT NULL, received_at text, failed_at timestamp NOT NULL, error text NOT "
    'NULL, shard text NOT NULL, "offset" bigint NOT NULL)',
    "CREATE TABLE IF NOT EXISTS _trackd.events (key bigint NOT NULL, source text NOT NULL, "
    "message_id text NOT NULL, type text NOT NULL, received_at timestamp NOT NULL, "
    '"timestamp" timestamp, user_id text, anonymous_id text, body text NOT NULL, '
    'shard text NOT NULL, "offset" bigint NOT NULL)',
    "DROP INDEX IF EXISTS _trackd.events_user_id",
    "CREATE INDEX IF NOT EXISTS events_user_id_set ON _trackd.events (user_id) "
    "WHERE user_id IS NOT NULL",
    "DROP INDEX IF EXISTS _trackd.events_anonymous_id",
    "CREATE INDEX IF NOT EXISTS events_anonymous_id_set ON _trackd.events (anonymous_id) "
    "WHERE anonymous_id IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS _trackd.violation_offsets (shard text PRIMARY KEY, "
    "last_id bigint NOT NULL)",
)
VIOLATIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS {target} (message_id text, received_at timestamptz, type text, "
    "event text, violation text, path text, rule text, message text, plan_version bigint, "
    "action text)")

Tables = dict[tuple[str, str], dict[str, str]]


class SchemaMoved(Exception):
    """Another loader changed the schema in a way this batch did not expect: re-read, retry."""


def load_catalog(con: psycopg.Connection[Any], catalog: Catalog) -> None:
    """Fill `catalog` with every user table of the database (types as the loader names them)."""
    rows = con.execute(
        "SELECT table_schema, table_name, column_name, data_type "
        "FROM information_schema.columns WHERE table_catalog = current_database() "
        "AND table_schema NOT LIKE 'pg\\_%' ORDER BY table_schema, table_name, "
        "ordinal_position").fetchall()
    catalog.schemas = {r[0] for r in con.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%'").fetchall()
        if r[0] not in INTERNAL_SCHEMAS and r[0] != "public"}
    catalog.tables = {}
    for schema, table, column, data_type in rows:
        if schema not in INTERNAL_SCHEMAS:
            catalog.tables.setdefault((schema, table), {})[column] = str(
                _BACK.get(data_type, ColumnType.VARCHAR))


def copy_tables(tables: Tables) -> Tables:
    return {key: dict(columns) for key, columns in tables.items()}


def changes(now: Tables, before: Tables) -> Tables:
    """The tables of `now` that are new or have columns `before` lacks: those columns."""
    found: Tables = {}
    for key, columns in now.items():
        old = before.get(key)
        new = {c: t for c, t in columns.items() if old is None or c not in old}
        if new:
            found[key] = new
    return found


def apply_changes(con: psycopg.Connection[Any], new: Tables, full: Tables) -> None:
    """Create the tables and columns of `new` (in `con`'s transaction, under the DDL lock);
    raises SchemaMoved when a column exists with another type or a table has columns the
    catalog (`full`) does not know."""
    con.execute("SELECT pg_advisory_xact_lock(%s)", [DDL_LOCK])
    for schema in sorted({schema for schema, _ in new}):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
    for (schema, table), columns in new.items():
        target = f"{quote(schema)}.{quote(table)}"
        body = ", ".join(f"{quote(c)} {PG_TYPES[t]}" for c, t in full[(schema, table)].items())
        key = ", PRIMARY KEY (id)" if "id" in full[(schema, table)] else ""
        con.execute(f"CREATE TABLE IF NOT EXISTS {target} ({body}{key})")
        con.execute(f"ALTER TABLE {target} " + ", ".join(
            f"ADD COLUMN IF NOT EXISTS {quote(c)} {PG_TYPES[t]}" for c, t in columns.items()))
    check_tables(con, {key: full[key] for key in new})


def check_columns(con: psycopg.Connection[Any], schema: str, table: str,
                  expected: dict[str, str], *, exact: bool = False) -> None:
    """SchemaMoved unless `schema.table` has the `expected` columns with their types (and, if
    `exact`, no other)."""
    check_tables(con, {(schema, table): expected}, exact=exact)


def check_tables(con: psycopg.Connection[Any], expected: Tables, *, exact: bool = False) -> None:
    """`check_columns` for several tables in one query."""
    found: Tables = {key: {} for key in expected}
    for schema, table, name, kind in con.execute(
            "SELECT table_schema, table_name, column_name, data_type "
            "FROM information_schema.columns WHERE (table_schema, table_name) IN "
            "(SELECT * FROM unnest(%s::text[], %s::text[]))",
            [[s for s, _ in expected], [t for _, t in expected]]).fetchall():
        found[(schema, table)][name] = str(_BACK.get(kind, ColumnType.VARCHAR))
    for (schema, table), columns in expected.items():
        have = found[(schema, table)]
        names = have.keys() | columns.keys() if exact else columns.keys()
        moved = sorted(n for n in names if have.get(n) != columns.get(n))
        if moved:
            raise SchemaMoved(f"{schema}.{table} changed meanwhile ({', '.join(moved[:5])})")


def duck_ddl(new: Tables, full: Tables) -> list[str]:
    """The same changes for the in-memory DuckDB that flattens the rows."""
    out: list[str] = []
    for (schema, table), columns in new.items():
        target = f"{quote(schema)}.{quote(table)}"
        out.append(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
        body = ", ".join(f"{quote(c)} {t}" for c, t in full[(schema, table)].items())
        out.append(f"CREATE TABLE IF NOT EXISTS {target} ({body})")
        out.extend(f"ALTER TABLE {target} ADD COLUMN IF NOT EXISTS {quote(c)} {t}"
                   for c, t in columns.items())
    return out
