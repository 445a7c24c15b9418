"""COPY of Arrow tables into PostgreSQL: binary COPY built from Arrow columns, or CSV.

Binary (`binary.encode`): each value already in its column's type, which PostgreSQL then stores
without parsing text (about half its CPU per row on the warehouse's tables); the target's column
types are read from PostgreSQL's catalog, as binary COPY does not convert (once per connection
and table: again when the table has a column they lack, or after a COPY into it failed). A table
with a column the encoder does not take (another type, an integer out of range) goes as CSV
written by Arrow: NULL is an unquoted empty field and an empty string a quoted one, as
PostgreSQL's CSV format reads them, and lists become array literals. Neither has Python per row.
"""

from __future__ import annotations

import io
import weakref
from collections.abc import Sequence
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from trackd.warehouse.naming import quote
from trackd.warehouse.postgres import binary

_CSV = pacsv.WriteOptions(include_header=False)
_TYPES = ("SELECT attname, typname FROM pg_attribute JOIN pg_type ON pg_type.oid = atttypid "
          "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped")


# Per connection: the column types of the tables copied into (table -> column -> typname).
_types: weakref.WeakKeyDictionary[psycopg.Connection[Any], dict[str, dict[str, str]]] = (
    weakref.WeakKeyDictionary())


def copy_arrow(con: psycopg.Connection[Any], target: str, table: pa.Table, *,
               like: str | None = None) -> None:
    """COPY `table`'s rows into `target` (its columns by name), binary or CSV (above); `like`:
    the table `target` was made LIKE (a staging table: its names are reused for others).

    PostgreSQL's text and jsonb cannot hold a NUL character: a batch that has one is copied
    again with NULs removed from its strings (rare, so only then)."""
    try:
        try:
            with con.transaction():
                _copy(con, target, table, like or target)
        except (psycopg.errors.CharacterNotInRepertoire,
                psycopg.errors.UntranslatableCharacter):
            _copy(con, target, _without_nul(table), like or target)
    except BaseException:
        _types.get(con, {}).pop(like or target, None)  # read again: the table may have moved
        raise


def _copy(con: psycopg.Connection[Any], target: str, table: pa.Table, typed: str) -> None:
    try:
        encoded = binary.encode(table, column_types(con, typed, table.column_names))
    except binary.Unsupported:
        copy_csv(con, target, table)
        return
    columns = ", ".join(quote(c) for c in encoded.columns)
    with con.cursor().copy(f"COPY {target} ({columns}) FROM STDIN (FORMAT binary)") as copy:
        for piece in encoded.data:
            copy.write(memoryview(piece))


def column_types(con: psycopg.Connection[Any], target: str,
                 columns: Sequence[str]) -> dict[str, str]:
    """`target`'s column types (`pg_type.typname` by name), as last read on `con` unless one
    of `columns` is not among them."""
    known = _types.setdefault(con, {})
    types = known.get(target)
    if types is None or any(c not in types for c in columns):
        types = known[target] = dict(con.execute(_TYPES, [target]).fetchall())
    return types


def copy_csv(con: psycopg.Connection[Any], target: str, table: pa.Table) -> None:
    """COPY `table` into `target` as CSV written by Arrow (every type PostgreSQL reads as text)."""
    buffer = io.BytesIO()
    pacsv.write_csv(_literal_lists(table), buffer, _CSV)
    columns = ", ".join(quote(c) for c in table.column_names)
    with con.cursor().copy(f"COPY {target} ({columns}) FROM STDIN (FORMAT csv)") as copy:
        copy.write(buffer.getbuffer())


def _literal_lists(table: pa.Table) -> pa.Table:
    """`table` with each list of strings as a PostgreSQL array literal (`{"a","b"}`)."""
    for i, field in enumerate(table.schema):
        if pa.types.is_list(field.type) or pa.types.is_large_list(field.type):
            table = table.set_column(i, field.name, pa.chunked_array(
                [_literal(chunk) for chunk in table.column(i).chunks], pa.string()))
    return table


def _literal(lists: pa.Array) -> pa.Array:
    values = pc.cast(lists.flatten(), pa.string())
    escaped = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')
    quoted = pc.binary_join_element_wise('"', escaped, '"', "")
    offsets = pc.subtract(lists.offsets, lists.offsets[0])
    inner = pc.binary_join(pa.ListArray.from_arrays(offsets, quoted, mask=lists.is_null()), ",")
    return pc.binary_join_element_wise("{", inner, "}", "")


def _without_nul(table: pa.Table) -> pa.Table:
    """`table` with NUL characters (raw, or escaped in JSON text) removed from its strings."""
    columns = []
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            column = pc.replace_substring(pc.replace_substring(column, "\x00", ""),
                                          "\\u0000", "")
        columns.append(column)
    return pa.table(columns, names=table.column_names)
