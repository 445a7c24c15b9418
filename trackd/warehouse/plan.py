"""Which columns a batch fills in one table, from which JSON paths, and the SQL that loads them.

| call     | table           | payload (unprefixed columns) | call's own columns    |
|----------|-----------------|------------------------------|-----------------------|
| track    | `tracks`        | none                         | `event`, `event_text` |
| track    | `<event table>` | `properties`                 | `event`, `event_text` |
| identify | `identifies`    | `traits`                     |                       |
| page     | `pages`         | `properties`                 | `name`, `category`    |
| screen   | `screens`       | `properties`                 | `name`, `category`    |
| group    | `groups`        | `traits`                     | `group_id`            |
| alias    | `aliases`       | none                         | `previous_id`         |

Every table also has the common columns (`id` = messageId, `anonymous_id`, `user_id`, the four
timestamps, `uuid_ts`, `channel` when sent, `context_*`). `users`/`accounts` are upserts, done
in Python (`upsert`).

The columns come from the JSON *structure* of the batch (DuckDB's `json_structure` of each
group's bodies as one array: what `json_group_structure` computes), not from walking every row:
nested objects flatten with `_` below their parent's snake_cased name (`naming`), arrays and
objects deeper than `MAX_DEPTH` levels are one column of JSON text, keys with no usable
character have no column. A property or trait whose column is reserved keeps its value under a
`_`-prefixed name (`naming.payload_column`); on pages and screens a `name` or `category`
property equal to the call's own is not repeated, and fills the column when the call has none.
Where a key is an object in some rows and a scalar in others (structure "JSON"), the scalar rows
fill `<key>` and the objects are discovered by a further query (`Mixed`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trackd.warehouse.naming import payload_column, quote, snakecase
from trackd.warehouse.sql import convert, literal, pointer, present
from trackd.warehouse.values import ColumnType

if TYPE_CHECKING:
    from trackd.warehouse.wide import WideRows

MAX_DEPTH = 10  # objects at this depth are kept as JSON text (the same as shape.flatten)
STAGE = "__trackd_stage"
# The properties of a track whose event is beyond the source's table limit, for `_overflow`
_PROPERTIES = (", CASE WHEN s.event_overflow THEN json_object('properties', "
               "json_extract(s.body, '/properties')) END AS __properties")
Keys = tuple[str, ...]
Structure = Any  # decoded json_group_structure: dict, list, or a type name


@dataclass
class Leaf:
    """One column's source: a JSON path, and whether objects there count as values (text)."""

    name: str
    keys: Keys
    objects: bool = False


@dataclass
class Mixed:
    """A key that holds objects in some rows and scalars in others: objects still to discover."""

    name: str
    keys: Keys
    depth: int


Ref = Callable[[Keys], tuple[str, str]]  # SQL for the json_type and the text at a path


@dataclass(frozen=True)
class Source:
    """Where a column's value comes from: `paths` in priority order (names can collide: the
    last one sent wins), or on pages/screens a `call` column and its `kept` property."""

    role: str  # "value", "call" (name/category) or "kept" (_name/_category)
    paths: tuple[Keys, ...]

    def sql(self, ref: Ref) -> tuple[str, str]:
        """SQL for the json_type and the text (the string for a string, the JSON of anything
        else) of the column's value, from `ref`'s for its paths."""
        if self.role == "value":
            refs = [ref(keys) for keys in self.paths]
            if len(refs) == 1:
                return refs[0]
            t = "CASE " + " ".join(f"WHEN {t} <> 'NULL' THEN {t}" for t, _ in refs) + " END"
            s = "CASE " + " ".join(f"WHEN {t} <> 'NULL' THEN {s}" for t, s in refs) + " END"
            return t, s
        (tc, sc), (tp, sp) = ref(self.paths[0]), ref(self.paths[1])
        has_call = f"{tc} = 'VARCHAR'"
        if self.role == "call":  # the call's own, else the property
            return (f"CASE WHEN {has_call} THEN {tc} ELSE {tp} END",
                    f"CASE WHEN {has_call} THEN {sc} ELSE {sp} END")
        kept = f"{has_call} AND NOT coalesce({tp} = 'VARCHAR' AND {sp} = {sc}, false)"
        return f"CASE WHEN {kept} THEN {tp} END", f"CASE WHEN {kept} THEN {sp} END"


@dataclass
class Column:
    """A column of a load: its value's `source` in the body, or `direct` SQL for an already
    typed value."""

    name: str
    source: Source | None = None
    direct: str | None = None
    objects: bool = False


def _value(name: str, *paths: Keys, objects: bool = False) -> Column:
    return Column(name, Source("value", paths), objects=objects)


def merge(a: Structure, b: Structure) -> Structure:
    """Two structures as one: objects merge by key; an object and anything else is "JSON"."""
    if a is None or a == "NULL":
        return b
    if b is None or b == "NULL" or a == b:
        return a
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for key, value in b.items():
            out[key] = merge(out.get(key), value)
        return out
    if isinstance(a, dict) or isinstance(b, dict) or "JSON" in (a, b):
        return "JSON"
    return "SCALAR"


def walk(structure: Structure, keys: Keys, name: str, depth: int,
         leaves: list[Leaf], mixed: list[Mixed]) -> None:
    """Flatten one object structure into leaves (and mixed keys to look at again)."""
    if not isinstance(structure, dict):
        return
    for key, sub in structure.items():
        part = snakecase(key)
        if not part:
            continue
        child = f"{name}_{part}" if name else part
        path = (*keys, key)
        if isinstance(sub, dict):
            if depth < MAX_DEPTH:
                walk(sub, path, child, depth + 1, leaves, mixed)
            else:
                leaves.append(Leaf(child, path, objects=True))
        elif sub == "JSON":
            leaves.append(Leaf(child, path, objects=depth >= MAX_DEPTH))
            if depth < MAX_DEPTH:
                mixed.append(Mixed(child, path, depth))
        elif sub != "NULL":
            leaves.append(Leaf(child, path))


def digit_safe(name: str) -> str:
    return "_" + name if name[0].isdigit() else name


def _extract(keys: Keys) -> str:
    return f"json_extract(s.body, {pointer(*keys)})"


@dataclass
class TablePlan:
    """The load of one table of one source in one batch."""

    schema: str
    table: str
    kind: str  # the standard table it is, or "tracks" for an event table
    call: str  # the call type whose rows it takes
    context: Structure = None
    payload: Structure = None
    event_tables: bool = False  # an event table: only rows with s.event_table = table
    leaves: list[Leaf] = field(default_factory=list)
    mixed: list[Mixed] = field(default_factory=list)
    paths: dict[Keys, int] = field(default_factory=dict)
    overflow: list[Column] = field(default_factory=list)  # beyond the table's column limit
    # tracks: some rows' events are beyond the source's table limit (`s.event_overflow`); their
    # properties go into the row's `_overflow`
    event_overflow: bool = False

    def ref(self, keys: Keys) -> tuple[str, str]:
        """SQL for the json_type and the text of the JSON value at `keys` of a row of `rows()`:
        every path of the plan is read by one `json_type` and one `json_extract_string` call,
        so each body is parsed twice per table and no value is parsed again."""
        index = self.paths.setdefault(keys, len(self.paths) + 1)
        return f"s.__t[{index}]", f"s.__s[{index}]"

    def rows(self) -> str:
        """SQL: the table's rows of the stage, with their paths read (`ref`)."""
        pointers = "[" + (", ".join(pointer(*keys) for keys in self.paths) or "'/'") + "]"
        properties = _PROPERTIES if self.event_overflow else ""
        return (f"(SELECT s.seq, s.event_table, json_type(s.body, {pointers}) AS __t, "
                f"json_extract_string(s.body, {pointers}) AS __s{properties} "
                f"FROM {STAGE} s WHERE {self.where})")

    @property
    def where(self) -> str:
        clause = f"s.source = {literal(self.schema)} AND s.type = {literal(self.call)}"
        if self.event_tables:
            clause += f" AND s.event_table = {literal(self.table)}"
        return clause

    def discover(self) -> None:
        """Leaves and mixed keys of the context and payload structures."""
        walk(self.context, ("context",), "context", 1, self.leaves, self.mixed)
        payload_key = "traits" if self.call in ("identify", "group") else "properties"
        if self.kind not in ("tracks", "aliases") or self.event_tables:
            walk(self.payload, (payload_key,), "", 1, self.leaves, self.mixed)

    def mixed_query(self, items: list[Mixed]) -> str:
        """SQL: the structure of the objects found at each mixed key (one column each).

        (`json_group_structure` is a macro in DuckDB 2, which takes no FILTER: its definition
        is written out, over the objects only.)"""
        aggregates = ", ".join(
            f"json_structure('[' || string_agg({_extract(m.keys)}::VARCHAR, ',') FILTER "
            f"(WHERE json_type({_extract(m.keys)}) = 'OBJECT') || ']') -> 0" for m in items)
        return f"SELECT {aggregates} FROM {STAGE} s WHERE {self.where}"

    def columns(self, loaded_at: str) -> list[Column]:
        """Every column of the load, the call's own first, then context, then payload."""
        out: dict[str, Column] = {}
        for name, key in (("id", "messageId"), ("anonymous_id", "anonymousId"),
                          ("user_id", "userId"), ("received_at", "receivedAt"),
                          ("sent_at", "sentAt"), ("timestamp", "timestamp"),
                          ("original_timestamp", "originalTimestamp"), ("channel", "channel")):
            out[name] = _value(name, (key,))
        out["uuid_ts"] = Column("uuid_ts", direct=f"TIMESTAMP {literal(loaded_at)}")
        if self.call == "track":
            out["event"] = Column("event", direct="__event_table")
            out["event_text"] = _value("event_text", ("event",))
        elif self.call == "group":
            out["group_id"] = _value("group_id", ("groupId",))
        elif self.call == "alias":
            out["previous_id"] = _value("previous_id", ("previousId",))
        pages = self.call in ("page", "screen")
        grouped: dict[str, list[Leaf]] = {}
        for leaf in self.leaves:
            if leaf.keys[0] == "context":
                name = leaf.name
            else:
                name = digit_safe(leaf.name)
                if pages and name in ("name", "category") and len(leaf.keys) == 2:
                    # the call's name/category fills the column; a different property is kept
                    # as _name/_category; an equal one is not repeated
                    out[name] = Column(name, Source("call", ((name,), leaf.keys)))
                    out["_" + name] = Column("_" + name, Source("kept", ((name,), leaf.keys)))
                    continue
                name = payload_column(name, self.kind)
            grouped.setdefault(name, []).append(leaf)
        for call_column in ("name", "category"):
            if pages and call_column not in out:
                out[call_column] = _value(call_column, (call_column,))
        for name, leaves in grouped.items():
            if name not in out:
                out[name] = _value(name, *(x.keys for x in reversed(leaves)),
                                   objects=any(x.objects for x in leaves))
        return list(out.values())

    def _typed_levels(self, columns: list[Column]) -> str:
        """SQL: the rows with, per column i, the json_type `t{i}` and the text `s{i}` of its
        value, plus `__seq` and `__event_table`."""
        refs = [c.source.sql(self.ref) for c in columns if c.source is not None]
        picks = ", ".join([f"{t} AS t{i}, {s} AS s{i}" for i, (t, s) in enumerate(refs)]
                          + ["s.seq AS __seq", "s.event_table AS __event_table"]
                          + (["s.__properties"] if self.event_overflow else []))
        return f"SELECT {picks} FROM {self.rows()} s"

    def first_values_query(self, columns: list[Column]) -> str:
        """SQL: the first value (JSON text, in log order) of each of `columns`."""
        picks = ", ".join(f"first(CASE WHEN t{i} = 'VARCHAR' THEN to_json(s{i})::VARCHAR "
                          f"ELSE s{i} END ORDER BY __seq) FILTER "
                          f"(WHERE {present(f't{i}', objects=c.objects)})"
                          for i, c in enumerate(columns))
        return f"SELECT {picks} FROM ({self._typed_levels(columns)})"

    def insert_statement(self, columns: list[Column], types: dict[str, str],
                         wide: WideRows | None = None) -> str:
        """SQL: INSERT the rows, typed; values that do not fit go to `_type_conflicts` (as
        their text: a string as itself, anything else as its JSON). `wide`: more columns,
        typed the long way (`wide.pivot`), joined by `__seq`.

        Returns one row per inserted row: whether it has type conflicts.
        """
        raws = [c for c in columns if c.source is not None]
        directs = [c for c in columns if c.direct is not None]
        values = ", ".join(
            f"{convert(f't{i}', f's{i}', types[c.name], objects=c.objects)} AS v{i}"
            for i, c in enumerate(raws))
        typed = self._typed_levels(raws)
        if raws:
            typed = f"SELECT *, {values} FROM ({typed})"
        checked = [(i, c) for i, c in enumerate(raws)
                   if types[c.name] not in (ColumnType.VARCHAR, ColumnType.JSON)]
        if checked:
            flags = ", ".join(f"CASE WHEN {present(f't{i}', objects=c.objects)} AND v{i} IS NULL "
                              f"THEN s{i} END AS c{i}" for i, c in checked)
            typed = f"SELECT *, {flags} FROM ({typed})"
        conflicts = _conflicts(checked)
        overflow = ["__properties"] if self.event_overflow else []
        outer = [f"v{i} AS {quote(c.name)}" for i, c in enumerate(raws)] + [
            f"{c.direct} AS {quote(c.name)}" for c in directs]
        source = f"({typed})"
        if wide is not None:
            source += f" n LEFT JOIN {wide.name} w ON w.__seq = n.__seq"
            outer += [f"w.{alias} AS {quote(name)}" for name, alias in wide.columns.items()]
            conflicts = _either(conflicts, "w.__conflicts::JSON")
            if wide.overflow:
                overflow.append("w.__overflow::JSON")
        if overflow:
            outer.append(f"{_either(*overflow)} AS _overflow")
        outer.append(f"{conflicts} AS _type_conflicts")
        return (f"INSERT INTO {quote(self.schema)}.{quote(self.table)} BY NAME "
                f"SELECT {', '.join(outer)} FROM {source} "
                "RETURNING _type_conflicts IS NOT NULL")


TYPED = "__trackd_typed"


def shared_load(loads: list[tuple[TablePlan, list[Column], dict[str, str]]]) -> list[str] | None:
    """SQL loading the tracks table and the event tables of one source from ONE pass over
    their rows, or None when another load should be used.

    The statements: create a temp table (`TYPED`) holding every track row's values, typed
    once per (source, type) the tables need, with their conflict texts; then per table an
    INSERT of its columns from it (event tables: their rows), with its own `_type_conflicts`;
    then drop it. Each body is parsed twice instead of twice per table, a common column is
    typed once instead of twice, and DuckDB plans one typing statement instead of one per
    table. When the event tables have many different properties the shared pass would read
    many paths for rows that lack them: it is used only while it reads at most as many paths
    per row as the tracks table and the widest event table together.
    """
    paths: dict[Keys, int] = {}

    def ref(keys: Keys) -> tuple[str, str]:
        index = paths.setdefault(keys, len(paths) + 1)
        return f"s.__t[{index}]", f"s.__s[{index}]"

    values: dict[tuple[Source | None, str, bool], int] = {}  # (source, type, objects) -> v{j}
    widths = []
    for _, columns, types in loads:
        needed: set[Keys] = set()
        for c in columns:
            if c.source is not None:
                values.setdefault((c.source, types[c.name], c.objects), len(values))
                needed.update(c.source.paths)
        widths.append(len(needed))
    refs = [source.sql(ref) for source, _, _ in values if source is not None]
    if len(loads) < 2 or len(paths) > widths[0] + max(widths[1:]):
        return None
    schema = loads[0][0].schema
    pointers = "[" + ", ".join(pointer(*keys) for keys in paths) + "]"
    events = loads[0][0].event_overflow  # the tracks table keeps some events' properties
    rows = (f"SELECT s.seq, s.event_table, json_type(s.body, {pointers}) AS __t, "
            f"json_extract_string(s.body, {pointers}) AS __s{_PROPERTIES if events else ''} "
            f"FROM {STAGE} s WHERE s.source = {literal(schema)} AND s.type = 'track'")
    picks = ", ".join([f"{t} AS t{j}, {s} AS s{j}" for j, (t, s) in enumerate(refs)]
                      + ["s.seq AS __seq", "s.event_table AS __event_table"]
                      + (["s.__properties"] if events else []))
    typed = ", ".join(f"{convert(f't{j}', f's{j}', kind, objects=objects)} AS v{j}"
                      for j, (_, kind, objects) in enumerate(values))
    checked = [(j, objects) for j, (_, kind, objects) in enumerate(values)
               if kind not in (ColumnType.VARCHAR, ColumnType.JSON)]
    flags = ", ".join(f"CASE WHEN {present(f't{j}', objects=objects)} AND v{j} IS NULL "
                      f"THEN s{j} END AS c{j}" for j, objects in checked)
    keep = ", ".join(["__seq", "__event_table"] + (["__properties"] if events else [])
                     + [f"v{j}" for j in range(len(values))]
                     + [f"c{j}" for j, _ in checked])
    inner = f"SELECT *, {typed} FROM (SELECT {picks} FROM ({rows}) s)"
    if checked:
        inner = f"SELECT *, {flags} FROM ({inner})"
    statements = [f"CREATE TEMP TABLE {TYPED} AS SELECT {keep} FROM ({inner})"]
    for plan, columns, types in loads:
        raws = [(values[(c.source, types[c.name], c.objects)], c) for c in columns
                if c.source is not None]
        mine = [(j, c) for j, c in raws
                if types[c.name] not in (ColumnType.VARCHAR, ColumnType.JSON)]
        conflicts = _conflicts(mine)
        outer = ", ".join([f"v{j} AS {quote(c.name)}" for j, c in raws]
                          + [f"{c.direct} AS {quote(c.name)}" for c in columns
                             if c.direct is not None]
                          + (["__properties AS _overflow"] if plan.event_overflow else [])
                          + [f"{conflicts} AS _type_conflicts"])
        where = f" WHERE __event_table = {literal(plan.table)}" if plan.event_tables else ""
        statements.append(f"INSERT INTO {quote(plan.schema)}.{quote(plan.table)} BY NAME "
                          f"SELECT {outer} FROM {TYPED}{where} "
                          "RETURNING _type_conflicts IS NOT NULL")
    statements.append(f"DROP TABLE {TYPED}")
    return statements


def _either(a: str, b: str | None = None) -> str:
    """SQL: two JSON objects (or NULLs) as one (`a` alone when `b` is None)."""
    if b is None:
        return a
    return (f"CASE WHEN ({b}) IS NULL THEN {a} WHEN ({a}) IS NULL THEN ({b}) "
            f"ELSE json_merge_patch({a}, {b}) END")


def _conflicts(flagged: list[tuple[int, Any]]) -> str:
    """The `_type_conflicts` expression: a JSON object of the columns whose flag `c<i>` is set
    (the value as sent, for a value that did not fit its column's type), NULL when none is."""
    if not flagged:
        return "NULL::JSON"
    none = " AND ".join(f"c{i} IS NULL" for i, _ in flagged)
    pairs = ", ".join(f"{literal(c.name)}, c{i}" for i, c in flagged)
    return (f"CASE WHEN {none} THEN NULL "
            f"ELSE json_merge_patch('{{}}'::JSON, json_object({pairs})) END")
