"""`users` and `accounts`: one row per id, traits merged call after call.

A trait the call omits keeps its value; a trait sent as null becomes null; a trait whose value
does not fit its column becomes null in the column and keeps its text in `_type_conflicts`
(a later value that fits removes it from there); a trait beyond the table's column limit merges
the same way inside the row's `_overflow` object. `received_at` is that of the last call
merged. Calls merge in the order they were loaded: by receivedAt within a batch, batch after
batch otherwise (per-trait timestamps would be needed to reorder calls across batches).

Runs inside the loader's transaction: the rows of the batch's ids are read, merged in Python,
deleted and inserted again in bulk from Arrow, so each id keeps exactly one row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import msgspec
import pyarrow as pa

from trackd.warehouse.catalog import OVERFLOW, Catalog
from trackd.warehouse.db import registered
from trackd.warehouse.naming import quote

_IDS = "__trackd_ids"
_ROWS = "__trackd_rows"


@dataclass
class Merge:
    """Everything one batch says about one id, merged in order.

    `first` keeps each trait's first non-null value: a trait set then cleared within one batch
    still gets its column (with the type of that value), as it would across two batches.
    """

    received_at: str
    values: dict[str, Any] = field(default_factory=dict)
    first: dict[str, Any] = field(default_factory=dict)

    def add(self, received_at: str, values: dict[str, Any]) -> None:
        self.received_at = received_at
        self.values.update(values)
        for name, value in values.items():
            if value is not None:
                self.first.setdefault(name, value)


def upsert(con: duckdb.DuckDBPyConnection, catalog: Catalog, schema: str, table: str,
           merges: dict[str, Merge], now: datetime) -> tuple[int, int]:
    """Apply `merges` to `schema.table` (users or accounts). Returns the rows with type
    conflicts and the rows with values kept in `_overflow`."""
    raw = [{"id": id_, "received_at": m.received_at, "uuid_ts": now, **m.values}
           for id_, m in merges.items()]
    # The columns the batch needs first (their type from each trait's first non-null value):
    # only traits without a column yet matter there.
    known = catalog.columns(schema, table)
    columns = catalog.fit(schema, table, table, [
        {name: value for name, value in m.first.items() if name not in known}
        for m in merges.values()])
    fitted = catalog.fit(schema, table, table, raw, keep_nulls=True)
    for statement in [*columns.ddl, *fitted.ddl]:
        con.execute(statement)
    target = f"{quote(schema)}.{quote(table)}"
    with registered(con, _IDS, pa.table({"id": pa.array(list(merges), pa.string())})):
        result = con.execute(f"SELECT * FROM {target} WHERE id IN (SELECT id FROM {_IDS})")
        names = [d[0] for d in result.description or ()]
        found = [dict(zip(names, row, strict=True)) for row in result.fetchall()]
        existing = {row["id"]: row for row in found}
        rows = [merged(existing.get(patch["id"], {}), patch) for patch in fitted.rows]
        con.execute(f"DELETE FROM {target} WHERE id IN (SELECT id FROM {_IDS})")
    with registered(con, _ROWS, catalog.arrow(schema, table, rows)):
        con.execute(f"INSERT INTO {target} BY NAME SELECT * FROM {_ROWS}")
    return fitted.conflicts, fitted.overflows


def merged(old: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    row = dict(old)
    conflicts = _conflicts(old.get("_type_conflicts"))
    overflow = _conflicts(old.get(OVERFLOW))
    for name, value in patch.items():
        if name in ("_type_conflicts", OVERFLOW):
            continue
        row[name] = value
        conflicts.pop(name, None)
    conflicts.update(patch.get("_type_conflicts") or {})
    if patch.get(OVERFLOW) or overflow:
        overflow.update(patch.get(OVERFLOW) or {})
        kept = {k: v for k, v in overflow.items() if v is not None}
        row[OVERFLOW] = msgspec.json.encode(kept).decode() if kept else None
    if conflicts:
        row["_type_conflicts"] = msgspec.json.encode(conflicts).decode()
    elif "_type_conflicts" in row:
        row["_type_conflicts"] = None
    return row


def _conflicts(value: Any) -> dict[str, Any]:
    if not value:
        return {}
    decoded = msgspec.json.decode(value) if isinstance(value, str | bytes) else value
    return dict(decoded) if isinstance(decoded, dict) else {}
