"""Loads with many columns: typed in long form (one row per value), pivoted in Python.

A statement that types N columns side by side (`plan.insert_statement`, `shared_load`) costs
DuckDB time and memory that grow faster than N: measured on one thread, typing 255 new columns
of 10 rows took ~0.4 s, 765 ~3 s and 2,550 ~100 s with 12 GB of memory outside DuckDB's own
limit (planning and binding, not data). So a table's load goes this way when it has more than
`WIDE` property or context columns, or when some of its columns are beyond the table's limit:

1. one statement reads every path of the load from each body as lists (`json_type`,
   `json_extract_string`) and unnests them: one row per (message, column) value, typed by one
   `CASE` on the column's type: its size does not depend on the number of columns;
2. the typed values are fetched (Arrow) and pivoted in Python into one row per message, with the
   row's `_type_conflicts` and `_overflow` objects (built in DuckDB);
3. the table's own columns (ids, timestamps, the call's) are typed as usual, and one
   `INSERT ... BY NAME` joins them to the pivoted rows (`insert_statement(wide=...)`).

The cost is proportional to the values, not to the square of the columns: the 2,550-column
batch above loads in well under a second. `first_values` uses the same long form to find the
first value of each new column (its type).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from trackd.warehouse.catalog import ARROW_TYPES, base_columns
from trackd.warehouse.db import registered
from trackd.warehouse.plan import STAGE, Column, TablePlan
from trackd.warehouse.sql import literal, pointer
from trackd.warehouse.values import ColumnType

WIDE = 64  # columns typed side by side at most; a wider load goes the long way
_PATHS = "__trackd_long_paths"
_CELLS = "__trackd_long_cells"
_ROWS = "__trackd_long_rows"
_TYPED = (ColumnType.BIGINT, ColumnType.DOUBLE, ColumnType.BOOLEAN, ColumnType.TIMESTAMP)
_MACRO = {ColumnType.BIGINT: "trk_bigint", ColumnType.DOUBLE: "trk_double",
          ColumnType.BOOLEAN: "trk_boolean", ColumnType.TIMESTAMP: "trk_timestamp"}


@dataclass
class WideRows:
    """The pivoted rows registered as `name`: `__seq`, one `w<j>` per column (`columns`: column
    name -> w<j>), `__conflicts` and `__overflow` (JSON text or NULL)."""

    name: str
    columns: dict[str, str] = field(default_factory=dict)
    overflow: bool = False  # the table keeps some columns' values in `_overflow`
    overflows: int = 0  # rows with a value in `__overflow`


def is_long(column: Column, kind: str) -> bool:
    """Whether the long form can type this column: a plain value at JSON paths (not the
    table's own columns, not pages' name/category)."""
    return (column.source is not None and column.source.role == "value"
            and column.name not in base_columns(kind))


def is_wide(plan: TablePlan, columns: list[Column]) -> bool:
    return bool(plan.overflow) or sum(is_long(c, plan.kind) for c in columns) > WIDE


class _Paths:
    """The JSON paths a long load reads (each once) and which column of which table each feeds:
    rows (p, tbl, k, prio, objects) of `table()`, p being 1-based into `pointers`."""

    def __init__(self, groups: list[tuple[str, list[Column]]]) -> None:
        index: dict[tuple[str, ...], int] = {}
        self.rows: list[tuple[int, str, int, int, bool]] = []
        for table, columns in groups:
            for k, column in enumerate(columns):
                assert column.source is not None
                for prio, keys in enumerate(column.source.paths):
                    p = index.setdefault(keys, len(index) + 1)
                    self.rows.append((p, table, k, prio, column.objects))
        self.pointers = "[" + ", ".join(pointer(*keys) for keys in index) + "]"
        self.count = len(index)

    def table(self) -> pa.Table:
        names = ("p", "tbl", "k", "prio", "objects")
        return pa.table({name: [r[i] for r in self.rows] for i, name in enumerate(names)})

    def chosen(self, where: str, by_table: bool = False) -> str:
        """SQL: (seq, tbl, k, t, v): the value of column k (of table tbl, when `by_table`: the
        rows' event table) in the row seq (the first present path by priority), its json_type
        t and text v; absent and null values have no row."""
        cells = (f"SELECT s.seq, coalesce(s.event_table, '') AS tbl, "
                 f"unnest(range(1, {self.count + 1})) AS p, "
                 f"unnest(json_type(s.body, {self.pointers})) AS t, "
                 f"unnest(json_extract_string(s.body, {self.pointers})) AS v "
                 f"FROM {STAGE} s WHERE {where}")
        match = " AND m.tbl = c.tbl" if by_table else ""
        return (f"SELECT c.seq, m.tbl, m.k, arg_min(c.t, m.prio) AS t, "
                f"arg_min(c.v, m.prio) AS v FROM ({cells}) c JOIN {_PATHS} m ON m.p = c.p"
                f"{match} WHERE c.t <> 'NULL' AND (c.t <> 'OBJECT' OR m.objects) "
                "GROUP BY c.seq, m.tbl, m.k")


_FIRST = "arg_min(CASE WHEN t = 'VARCHAR' THEN to_json(v)::VARCHAR ELSE v END, seq)"


def first_values(con: duckdb.DuckDBPyConnection, plan: TablePlan,
                 columns: list[Column]) -> list[str | None]:
    """The first value (JSON text, in log order) of each of `columns` (all `is_long`)."""
    if not columns:
        return []
    paths = _Paths([("", columns)])
    with registered(con, _PATHS, paths.table()):
        found = dict(con.execute(f"SELECT k, {_FIRST} FROM ({paths.chosen(plan.where)}) "
                                 "GROUP BY k").fetchall())
    return [found.get(k) for k in range(len(columns))]


def first_values_of_events(con: duckdb.DuckDBPyConnection, schema: str,
                           groups: list[tuple[str, list[Column]]]) -> dict[tuple[str, int], str]:
    """The first values of columns of many event tables of one source in one query (a new table
    costs no query of its own): (table, index in its columns) -> JSON text."""
    paths = _Paths(groups)
    where = (f"s.source = {literal(schema)} AND s.type = 'track' "
             f"AND s.event_table IN ({', '.join(literal(t) for t, _ in groups)})")
    with registered(con, _PATHS, paths.table()):
        rows = con.execute(f"SELECT tbl, k, {_FIRST} FROM ({paths.chosen(where, True)}) "
                           "GROUP BY tbl, k").fetchall()
    return {(table, k): first for table, k, first in rows if first is not None}


def pivot(con: duckdb.DuckDBPyConnection, plan: TablePlan, columns: list[Column],
          types: dict[str, str]) -> tuple[WideRows, pa.Table]:
    """The long columns of the load (`columns`, typed by `types`) and `plan.overflow`, as one
    Arrow row per message of the load (see the module docstring)."""
    specs = [(c, types[c.name]) for c in columns] + [(c, None) for c in plan.overflow]
    every = [c for c, _ in specs]
    kinds = pa.table({"k": list(range(len(specs))), "name": [c.name for c, _ in specs],
                      "type": pa.array([t for _, t in specs], pa.string()),
                      "objects": [c.objects for c, _ in specs]})
    typed = ", ".join(f"CASE WHEN k.type = '{t}' THEN {_MACRO[t]}(c.t, c.v) END AS v_{t.lower()}"
                      for t in _TYPED)
    unfit = " AND ".join(f"v_{t.lower()} IS NULL" for t in _TYPED)
    paths = _Paths([("", every)])
    with registered(con, _PATHS, paths.table()), registered(con, _ROWS, kinds):
        con.execute(
            f"CREATE TEMP TABLE {_CELLS} AS SELECT c.seq, c.k, c.t, c.v, k.name, k.type, "
            f"{typed}, CASE WHEN k.type IN ('VARCHAR', 'JSON') "
            "THEN trk_varchar(c.t, c.v, k.objects) END AS v_varchar "
            f"FROM ({paths.chosen(plan.where)}) c JOIN {_ROWS} k ON k.k = c.k")
    try:
        seqs = [r[0] for r in con.execute(
            f"SELECT s.seq FROM {STAGE} s WHERE {plan.where} ORDER BY s.seq").fetchall()]
        position = {seq: i for i, seq in enumerate(seqs)}
        out: dict[str, Any] = {"__seq": pa.array(seqs, pa.int64())}
        wide = WideRows(_ROWS, overflow=bool(plan.overflow))
        result = con.execute(
            "SELECT k, seq, v_bigint, v_double, v_boolean, v_timestamp, v_varchar "
            f"FROM {_CELLS} WHERE type IS NOT NULL ORDER BY k, seq").fetchall()
        values: dict[int, list[Any]] = {}
        for k, seq, *typed_values in result:
            row = values.get(k)
            if row is None:
                row = values[k] = [None] * len(seqs)
            row[position[seq]] = next((v for v in typed_values if v is not None), None)
        for k, (column, column_type) in enumerate(specs):
            if column_type is None or k not in values:
                continue
            alias = wide.columns[column.name] = f"w{k}"
            out[alias] = pa.array(values[k], ARROW_TYPES.get(column_type, pa.string()))
        extras = [None] * len(seqs), [None] * len(seqs)
        conflict = f"k.type NOT IN ('VARCHAR', 'JSON') AND {unfit}"
        for seq, conflicts, overflow in con.execute(
                f"SELECT seq, to_json(map_from_entries(list({{'k': name, 'v': v}}) "
                f"FILTER (WHERE {conflict}))), to_json(map_from_entries(list({{'k': name, "
                "'v': CASE WHEN t = 'VARCHAR' THEN to_json(v) ELSE v::JSON END}) "
                "FILTER (WHERE type IS NULL))) "
                f"FROM {_CELLS} k WHERE type IS NULL OR ({conflict}) GROUP BY seq").fetchall():
            extras[0][position[seq]] = conflicts if conflicts not in (None, "{}") else None
            extras[1][position[seq]] = overflow if overflow not in (None, "{}") else None
        out["__conflicts"] = pa.array(extras[0], pa.string())
        out["__overflow"] = pa.array(extras[1], pa.string())
        wide.overflows = sum(v is not None for v in extras[1])
    except BaseException:
        raise  # the transaction is aborted: its rollback drops the temp table
    con.execute(f"DROP TABLE {_CELLS}")
    return wide, pa.table(out)


def load(con: duckdb.DuckDBPyConnection, plan: TablePlan, columns: list[Column],
         types: dict[str, str]) -> tuple[int, int]:
    """Load one table the long way. Returns rows with type conflicts, rows with overflow."""
    long = [c for c in columns if is_long(c, plan.kind)]
    narrow = [c for c in columns if not is_long(c, plan.kind)]
    wide, rows = pivot(con, plan, long, types)
    with registered(con, wide.name, rows):
        flags = con.execute(plan.insert_statement(narrow, types, wide=wide)).fetchall()
    return flags.count((True,)), wide.overflows

