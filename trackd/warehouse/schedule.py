"""Which records the loader writes in which transaction, so one source's schema work cannot
hold back the others.

Most reads need little or no DDL and load in one transaction, as they always did. A source that
sends hundreds of new event names or property names (a bug, or an attacker with a write key)
makes the load pay for each new table and column (~3 ms per table, an ALTER per column); in the
same transaction as everyone else's records, every source would wait for it. So `Schedule.split`
estimates each record's schema work (`cost`: new column names, plus `TABLE_COST` per new event
table up to the source's table limit, beyond which an event stays in the tracks row) and, when
a read needs more than `BUDGET`:

1. the records of every source within the budget load first, in one transaction;
2. then each expensive source loads ONE chunk of its records (in order of receipt) whose work
   fits the budget; the rest of its records wait for the next round, which reads what came
   meanwhile and again puts the cheap sources first.

So a message of another source waits at most for one chunk per expensive source, however large
the schema work queued before it. The estimate reads property names only (top-level and nested
keys, as `plan.walk` names them; a record shaped like one its source had in the read adds
nothing); the loader still does the real planning, so an estimate that
is off changes the chunking, never what is loaded. The log position the loader saves with each
transaction stays behind every record read and not yet committed (`Reads`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec

from trackd.log.records import Position, Record, advanced
from trackd.warehouse.catalog import Catalog, base_columns
from trackd.warehouse.naming import (
    HOME_TABLE,
    STANDARD_TABLES,
    event_table,
    payload_column,
    snakecase,
)
from trackd.warehouse.plan import MAX_DEPTH

BUDGET = 256  # schema work per transaction: 256 new columns, or 32 new tables
TABLE_COST = 8  # a new table costs about as much as 8 new columns
OVERFLOW_VALUES = 8  # and a column as 8 new names beyond a table's column limit
_PAYLOAD = {"identify": "traits", "group": "traits", "track": "properties",
            "page": "properties", "screen": "properties"}
_PROFILE = {"identify": "users", "group": "accounts"}


class _Shape(msgspec.Struct):
    """What the estimate reads of a body."""

    event: Any = None
    properties: Any = None
    traits: Any = None
    context: Any = None


_decoder = msgspec.json.Decoder(_Shape)


@dataclass
class _Source:
    """One source in a read: the tables and columns its records create, and its chunk."""

    tables: set[str] = field(default_factory=set)  # new event tables
    columns: dict[str, set[str]] = field(default_factory=dict)  # table -> new names
    chunk: list[Record] = field(default_factory=list)  # its records in the first chunk
    spent: int = 0  # their schema work
    later: list[Record] = field(default_factory=list)  # its records beyond that chunk
    shapes: set[tuple[Any, ...]] = field(default_factory=set)  # of the records estimated


class Schedule:
    """Splits the loader's records into transactions (see the module docstring)."""

    def __init__(self, catalog: Catalog, max_tables: int, budget: int = BUDGET) -> None:
        self.catalog = catalog
        self.max_tables = max_tables
        self.budget = budget
        self._counts: Counter[str] = Counter()  # event tables per source, when `split` began

    def split(self, records: list[Record]) -> tuple[list[list[Record]], list[Record]]:
        """(the transactions to run now, in order; the records left for the next round).

        One pass in order of receipt: a source's records fill its first chunk until the next
        would pass the budget; from then on the source is expensive and its other records are
        left for the next round without being estimated."""
        self._counts = Counter(s for s, t in self.catalog.tables if t not in STANDARD_TABLES)
        state: dict[str, _Source] = {}
        for record in records:
            work = state.get(record.source)
            if work is None:
                work = state[record.source] = _Source()
            if work.later:
                work.later.append(record)
                continue
            cost = self.cost(work, record)
            if work.chunk and work.spent + cost > self.budget:
                work.later.append(record)
            else:
                work.chunk.append(record)
                work.spent += cost
        expensive = sorted(source for source, work in state.items()
                           if work.later or work.spent > self.budget)
        if not expensive:
            return ([records] if records else []), []
        heavy = set(expensive)
        cheap = [r for r in records if r.source not in heavy]
        now = [cheap] if cheap else []
        now += [state[source].chunk for source in expensive]
        return now, [r for source in expensive for r in state[source].later]

    def cost(self, work: _Source, record: Record) -> int:
        """The schema work `record` adds to its source's `work` (which it updates). A record
        shaped like one estimated before for the source (same type, event and names) adds
        none: its tables and names are in `work` already."""
        if record.type not in HOME_TABLE:
            return 0
        try:
            body = _decoder.decode(record.body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return 0  # the loader finds what is wrong with it
        event = body.event if record.type == "track" else None
        payload = _PAYLOAD.get(record.type)
        context = _names(body.context, "context", 0)
        names = _names(getattr(body, payload), "", 0) if payload else ()
        shape = (record.type, event if isinstance(event, str) else None, context, names)
        if shape in work.shapes:
            return 0
        work.shapes.add(shape)
        spent = 0
        home = HOME_TABLE[record.type]
        targets: list[tuple[str, str, tuple[str, ...]]] = [(home, home, ())]
        if record.type == "track":
            table = event_table(event) if isinstance(event, str) else ""
            new = table and (record.source, table) not in self.catalog.tables
            if new and table not in work.tables:
                if self._counts[record.source] + len(work.tables) >= self.max_tables:
                    table = ""  # beyond the limit: kept in the tracks row
                else:
                    work.tables.add(table)
                    spent += TABLE_COST
            if table:
                targets.append((table, "tracks", names))
        else:
            targets[0] = (home, home, names)
            if record.type in _PROFILE:
                profile = _PROFILE[record.type]
                targets.append((profile, profile, names))
        for table, kind, payload_names in targets:
            found = list(context) if kind not in _PROFILE.values() else []
            columns = _COLUMNS.setdefault(kind, {})
            found += [columns.get(n) or _column(columns, n, kind) for n in payload_names]
            spent += self._new_columns(work, record.source, table, kind, found)
        return spent

    def _new_columns(self, work: _Source, source: str, table: str, kind: str,
                     names: list[str]) -> int:
        """New names: a column each while the table has room, else `OVERFLOW_VALUES` of them
        per unit (their values go through the wide load into `_overflow`: no DDL)."""
        if not names:
            return 0
        known = self.catalog.columns(source, table)
        base = base_columns(kind)
        new = work.columns.setdefault(table, set())
        room = self.catalog.max_columns - len(base) - len(known) - len(new)
        added = {n for n in names if n not in known and n not in base and n not in new}
        new.update(added)
        columns = min(len(added), max(0, room))
        return columns + -(-(len(added) - columns) // OVERFLOW_VALUES)


def _names(value: Any, prefix: str, depth: int,
           shape: tuple[Any, ...] | None = None) -> tuple[str, ...]:
    """The column names an object's leaves get (`plan.walk`'s naming), remembered by the
    object's shape (`_shape`; given when the parent's shape already holds it)."""
    if not isinstance(value, dict):
        return ()
    if shape is None:
        shape = _shape(value, depth)
    memo = (prefix, depth, shape)
    found = _SHAPES.get(memo)
    if found is not None:
        return found
    subs = iter(shape[2] if len(shape) > 2 else ())  # the shapes of its objects, in order
    out: list[str] = []
    for key, sub in value.items():
        inner = next(subs) if type(sub) is dict and len(shape) > 2 else None
        name = _JOINED.get((prefix, key))
        if name is None:
            name = _joined(prefix, key)
        if not name:
            continue
        if isinstance(sub, dict) and sub and depth < MAX_DEPTH:
            out += _names(sub, name, depth + 1, inner)
        elif sub is not None:
            out.append(name)
    if len(_SHAPES) >= _MEMO:
        _SHAPES.clear()
    names = _SHAPES[memo] = tuple(out)
    return names


def _shape(value: dict[Any, Any], depth: int) -> tuple[Any, ...]:
    """What the names of an object at `depth` depend on: its keys, its values' types (null or
    not, object or not) and the shapes of the objects in it that `_names` goes into (JSON
    decoded by msgspec: plain dicts); none below `MAX_DEPTH`, so a context nested as deep as
    the decoder allows costs no deeper recursion than the names do."""
    types = tuple(map(type, value.values()))
    if dict not in types or depth >= MAX_DEPTH:
        return tuple(value), types
    return tuple(value), types, tuple(_shape(sub, depth + 1) for sub in value.values()
                                      if type(sub) is dict)


# The names and columns of the keys seen, and the names of the objects' shapes, as every record
# of a source mostly has the same ones (with names alone the estimate was a quarter of the
# loader's CPU: 9.5 µs per message of bench/warehouse_load.py's, 4.4 with the shapes and a
# source's repeated shapes skipped); bounded, as keys come from the messages.
_JOINED: dict[tuple[str, Any], str] = {}
_COLUMNS: dict[str, dict[str, str]] = {}  # per table kind
_SHAPES: dict[tuple[str, int, tuple[Any, ...]], tuple[str, ...]] = {}  # `_names`
_MEMO = 65536


def _joined(prefix: str, key: Any) -> str:
    part = snakecase(key) if isinstance(key, str) else ""
    name = (f"{prefix}_{part}" if prefix else part) if part else ""
    if len(_JOINED) >= _MEMO:
        _JOINED.clear()
    _JOINED[prefix, key] = name
    return name


def _column(columns: dict[str, str], name: str, kind: str) -> str:
    if len(columns) >= _MEMO:
        columns.clear()
    columns[name] = column = payload_column(name, kind)
    return column


class Reads:
    """The records the loader has read and not committed yet, and the log position it may
    save: per shard, up to the first of them (others may commit ahead of it), else all read."""

    def __init__(self, committed: Position) -> None:
        self.after: Position = dict(committed)  # the log is read after this
        self._offsets: dict[str, set[int]] = {}  # per shard: read, not committed

    def add(self, records: list[Record]) -> None:
        if records:
            self.after = advanced(self.after, records)
        for record in records:
            self._offsets.setdefault(record.shard, set()).add(record.offset)

    def position_with(self, committed: Position, records: list[Record]) -> Position:
        """The position once `records` are committed too (`committed`: the one saved)."""
        gone: dict[str, set[int]] = {}
        for record in records:
            gone.setdefault(record.shard, set()).add(record.offset)
        out = dict(committed)
        for shard, top in self.after.items():
            left = self._offsets.get(shard, set()) - gone.get(shard, set())
            mark = min(left) - 1 if left else top
            if mark > out.get(shard, 0):
                out[shard] = mark
        return out

    def settle(self, records: list[Record]) -> None:
        """`records` are committed."""
        for record in records:
            self._offsets.get(record.shard, set()).discard(record.offset)

    def unsettled(self, records: list[Record]) -> list[Record]:
        """Those of `records` not committed."""
        return [r for r in records if r.offset in self._offsets.get(r.shard, ())]
