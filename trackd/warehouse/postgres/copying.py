"""COPY of Arrow tables into PostgreSQL: CSV written by Arrow, streamed to `COPY ... FROM STDIN`.

CSV keeps the loader's side in Arrow's C++ (no Python per row); NULL is an unquoted empty
field and an empty string a quoted one, as PostgreSQL's CSV format reads them.
"""

from __future__ import annotations

import io
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from trackd.warehouse.naming import quote

_CSV = pacsv.WriteOptions(include_header=False)


def copy_arrow(con: psycopg.Connection[Any], target: str, table: pa.Table) -> None:
    """COPY `table`'s rows into `target` (its columns by name), as CSV written by Arrow.

    PostgreSQL's text and jsonb cannot hold a NUL character: a batch that has one is copied
    again with NULs removed from its strings (rare, so only then)."""
    try:
        with con.transaction():
            _copy(con, target, table)
    except (psycopg.errors.CharacterNotInRepertoire,
            psycopg.errors.UntranslatableCharacter):
        _copy(con, target, _without_nul(table))


def _copy(con: psycopg.Connection[Any], target: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, _CSV)
    columns = ", ".join(quote(c) for c in table.column_names)
    with con.cursor().copy(f"COPY {target} ({columns}) FROM STDIN (FORMAT csv)") as copy:
        copy.write(buffer.getbuffer())


def _without_nul(table: pa.Table) -> pa.Table:
    """`table` with NUL characters (raw, or escaped in JSON text) removed from its strings."""
    columns = []
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            column = pc.replace_substring(pc.replace_substring(column, "\x00", ""),
                                          "\\u0000", "")
        columns.append(column)
    return pa.table(columns, names=table.column_names)
