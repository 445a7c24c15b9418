"""What tables and columns exist, with their types; how a batch's rows fit them.

The catalog is the loader's in-memory copy of the warehouse's `information_schema`. `ensure`
says which DDL a load needs first (CREATE SCHEMA, CREATE TABLE, ALTER TABLE ADD COLUMN); `fit`
types Python rows (the users/accounts upserts) and ensures their columns. The catalog changes
as they run; if the transaction that runs the DDL fails, the loader `load`s it again.

Base columns exist from a table's creation on (so SQL over `user_id`, `event`, `channel` or
`_type_conflicts` works before the first value arrives); every other column is created when its
first non-null value comes (`ensure`, with the type of that value), while the table has fewer
than `max_columns` columns; a value for a column beyond that is kept in the row's `_overflow`
JSON object under the column's name (`OVERFLOW`, created when first needed, outside the count).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import msgspec
import pyarrow as pa

from trackd.warehouse.naming import STANDARD_TABLES, quote
from trackd.warehouse.values import CONFLICT, ColumnType, convert, infer, text

V, T, J = ColumnType.VARCHAR, ColumnType.TIMESTAMP, ColumnType.JSON

# Segment's standard context columns: on every call table from its creation, so SQL and dbt
# models written for Segment run on a source before every field has been seen.
STANDARD_CONTEXT = (
    "context_ip", "context_user_agent", "context_page_path", "context_page_referrer",
    "context_page_search", "context_page_title", "context_page_url", "context_campaign_name",
    "context_campaign_source", "context_campaign_medium", "context_campaign_term",
    "context_campaign_content", "context_library_name", "context_library_version")
_COMMON: dict[str, ColumnType] = {
    "id": V, "received_at": T, "uuid_ts": T, "anonymous_id": V, "user_id": V, "sent_at": T,
    "timestamp": T, "original_timestamp": T, "channel": V, "_type_conflicts": J,
    **dict.fromkeys(STANDARD_CONTEXT, V),
}
_PAGE = {"name": V, "category": V, "url": V, "path": V, "title": V, "search": V, "referrer": V}
_PROFILE: dict[str, ColumnType] = {"id": V, "received_at": T, "uuid_ts": T, "_type_conflicts": J}
_BASE: dict[str, dict[str, ColumnType]] = {
    "tracks": {**_COMMON, "event": V, "event_text": V},
    "identifies": _COMMON,
    "pages": {**_COMMON, **_PAGE},
    "screens": {**_COMMON, "name": V, "category": V},
    "groups": {**_COMMON, "group_id": V},
    "aliases": {**_COMMON, "previous_id": V},
    "users": _PROFILE,
    "accounts": _PROFILE,
}

ARROW_TYPES: dict[str, pa.DataType] = {
    ColumnType.VARCHAR: pa.string(), ColumnType.JSON: pa.string(), ColumnType.BIGINT: pa.int64(),
    ColumnType.DOUBLE: pa.float64(), ColumnType.BOOLEAN: pa.bool_(),
    ColumnType.TIMESTAMP: pa.timestamp("us"),
}
INTERNAL_SCHEMAS = ("_trackd", "information_schema", "pg_catalog")
OVERFLOW = "_overflow"
MAX_COLUMNS = 1000


def base_columns(kind: str) -> dict[str, ColumnType]:
    """The columns a table of this kind is created with (event tables: kind "tracks")."""
    return _BASE.get(kind, _BASE["tracks"])


@dataclass
class Fitted:
    """A table's rows typed for loading, and the DDL to run before inserting them."""

    schema: str
    table: str
    rows: list[dict[str, Any]]
    ddl: list[str] = field(default_factory=list)
    conflicts: int = 0
    overflows: int = 0  # rows with a value kept in _overflow


class Catalog:
    """Tables per (schema, table) with their column types, as the loader last saw them."""

    def __init__(self, max_columns: int = MAX_COLUMNS) -> None:
        self.max_columns = max_columns
        self.schemas: set[str] = set()
        self.tables: dict[tuple[str, str], dict[str, str]] = {}

    def load(self, con: duckdb.DuckDBPyConnection) -> None:
        """Read every user schema, table and column from the database."""
        self.schemas = {r[0] for r in con.execute(
            "SELECT schema_name FROM information_schema.schemata WHERE catalog_name = "
            "current_database()").fetchall() if r[0] not in INTERNAL_SCHEMAS}
        self.tables = {}
        rows = con.execute(
            "SELECT table_schema, table_name, column_name, data_type "
            "FROM information_schema.columns WHERE table_catalog = current_database() "
            "ORDER BY table_schema, table_name, ordinal_position").fetchall()
        for schema, table, column, data_type in rows:
            if schema not in INTERNAL_SCHEMAS:
                self.tables.setdefault((schema, table), {})[column] = data_type

    def columns(self, schema: str, table: str) -> dict[str, str]:
        return self.tables.get((schema, table), {})

    def event_tables(self, schema: str) -> int:
        """How many tables the source's schema has beyond the standard ones."""
        return sum(1 for s, t in self.tables if s == schema and t not in STANDARD_TABLES)

    def room(self, schema: str, table: str, kind: str) -> int:
        """How many more columns the table may get (`_overflow` does not count)."""
        columns = {**base_columns(kind), **self.columns(schema, table)}
        return self.max_columns - len(columns) + (OVERFLOW in columns)

    def ensure(self, schema: str, table: str, kind: str, wanted: dict[str, str]) -> list[str]:
        """DDL creating what is missing for `wanted` columns (name -> type) and the base
        columns of `kind`; the catalog records it. Existing columns keep their type."""
        ddl: list[str] = []
        if schema not in self.schemas:
            ddl.append(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
            self.schemas.add(schema)
        target = f"{quote(schema)}.{quote(table)}"
        columns = self.tables.get((schema, table))
        if columns is None:
            columns = self.tables[(schema, table)] = {**base_columns(kind)}
            for name, column_type in wanted.items():
                columns.setdefault(name, column_type)
            body = ", ".join(f"{quote(c)} {t}" for c, t in columns.items())
            ddl.append(f"CREATE TABLE {target} ({body})")
            return ddl
        for name, column_type in {**base_columns(kind), **wanted}.items():
            if name not in columns:
                columns[name] = column_type
                ddl.append(f"ALTER TABLE {target} ADD COLUMN {quote(name)} {column_type}")
        return ddl

    def fit(self, schema: str, table: str, kind: str, rows: Iterable[dict[str, Any]],
            *, keep_nulls: bool = False) -> Fitted:
        """Type Python `rows` for `schema.table` (users/accounts upserts), creating what they
        need in the catalog.

        Null values are left out (a column appears with its first non-null value), unless
        `keep_nulls`, which keeps a null for a column that exists (an explicit null clears a
        trait). A value that does not fit its column is left out (null with `keep_nulls`) and
        its text goes into that row's `_type_conflicts` object. A value for a new column of a
        table at `max_columns` goes into the row's `_overflow` object.
        """
        out = Fitted(schema, table, [])
        columns: dict[str, str] = {**base_columns(kind), **self.columns(schema, table)}
        new: dict[str, str] = {}
        room = self.max_columns - len(columns) + (OVERFLOW in columns)
        overflowing = OVERFLOW in columns
        for raw in rows:
            typed: dict[str, Any] = {}
            conflicts: dict[str, str] = {}
            overflow: dict[str, Any] = {}
            for name, value in raw.items():
                if value is None:
                    if keep_nulls and name in columns:
                        typed[name] = None
                    elif keep_nulls and overflowing:  # clears a trait kept in _overflow
                        overflow[name] = None
                    continue
                column_type = columns.get(name)
                if column_type is None and room <= 0:
                    overflow[name] = value
                    continue
                if column_type is None:
                    room -= 1
                    column_type = columns[name] = new[name] = infer(value)
                converted = convert(value, column_type)
                if converted is CONFLICT:
                    conflicts[name] = text(value)
                    if keep_nulls:
                        typed[name] = None
                else:
                    typed[name] = converted
            if conflicts:
                typed["_type_conflicts"] = conflicts
                out.conflicts += 1
            if overflow:
                typed[OVERFLOW] = overflow
                new.setdefault(OVERFLOW, ColumnType.JSON)
                out.overflows += 1
            out.rows.append(typed)
        out.ddl = self.ensure(schema, table, kind, new)
        return out

    def arrow(self, schema: str, table: str, rows: list[dict[str, Any]]) -> pa.Table:
        """Rows (typed by `fit`) as an Arrow table with the columns' own types.

        `_type_conflicts` and `_overflow` values may be dicts (encoded here as JSON text).
        """
        columns = self.columns(schema, table)
        names: dict[str, None] = {}  # every column any row has, in first-seen order
        for row in rows:
            names.update(dict.fromkeys(row))
        arrays: dict[str, pa.Array] = {}
        for name in names:
            values = [row.get(name) for row in rows]
            if name in ("_type_conflicts", OVERFLOW):
                values = [v if v is None or isinstance(v, str)
                          else msgspec.json.encode(v).decode() for v in values]
            arrow_type = ARROW_TYPES.get(columns.get(name, ""))
            arrays[name] = pa.array(values, type=arrow_type)
        return pa.table(arrays)
