"""One load transaction: which messages load, and writing them, their upserts and bookkeeping.

`Batch.judge` walks the records in order of receipt and decides, against the ledger and the
earlier records of the same batch, whether each message is a duplicate (`is_duplicate`); it
reads only the records' metadata, except identify and group bodies (for users/accounts).
`Batch.write` runs inside the loader's transaction:

1. the messages to load go into a temp table (`__trackd_stage`: bodies validated as JSON once,
   the paths the bookkeeping needs read once);
2. one query gets the JSON structure of each (source, call, event) group, from which `plan`
   derives every table's columns; the first value of each new column fixes its type;
3. the DDL the tables need; then the tracks table and a source's event tables load from one
   typed pass over the track rows (`plan.shared_load`), every other table from one
   `INSERT ... SELECT` that types its columns in DuckDB (`sql` macros); misfits go to
   `_type_conflicts`;
4. users/accounts upserts (`upsert`), then the ledger, duplicates and profile events.

Dedup is per source and by messageId: a message repeats a loaded one when it was received
within the dedup window of it, or, at any distance in time, when it would go to the same table
(the same call type), so a table never holds one messageId twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta
from itertools import islice
from operator import attrgetter, le
from typing import Any

import duckdb
import msgspec
import pyarrow as pa

from trackd.log.records import Record
from trackd.warehouse import ledger, wide
from trackd.warehouse.catalog import OVERFLOW, Catalog, base_columns
from trackd.warehouse.db import registered
from trackd.warehouse.ledger import Loaded, message_key
from trackd.warehouse.naming import HOME_TABLE, event_table
from trackd.warehouse.plan import STAGE, Column, TablePlan, merge, shared_load, walk
from trackd.warehouse.shape import patch
from trackd.warehouse.sql import IDENTIFIER_PATHS, identifiers, literal, pointer
from trackd.warehouse.upsert import Merge, upsert
from trackd.warehouse.values import ColumnType, infer, parse_timestamp

_ARROW = "__trackd_arrow"
MAX_TABLES = 1000
EVENT_FIRSTS_TABLES = 8  # event tables with new columns from which one query finds them all
Load = tuple[TablePlan, list[Column], dict[str, str]]  # a table's plan, columns and types
_ORDER = attrgetter("received_at", "shard", "offset")
_SOURCE = attrgetter("source")
_RECEIVED_AT = attrgetter("received_at")
_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)
_EVENTS = "__trackd_event_tables"
_STAGE_TYPES = {"seq": pa.int64(), "key": pa.int64(), "source": pa.string(),
                "message_id": pa.string(), "type": pa.string(), "received_at": ledger.TS,
                "shard": pa.string(), "offset": pa.int64(), "is_new": pa.bool_(),
                "body": pa.string()}
# What the stage reads of each body once, for the bookkeeping and event_text: the json_type
# (s.__t[i]) of the first `_TYPED` of these paths, the text (s.__s[i]) of all of them.
_READ = (("timestamp",), *IDENTIFIER_PATHS, ("groupId",), ("event",))
_TYPED = 1 + len(IDENTIFIER_PATHS)


def _text(keys: tuple[str, ...]) -> str:
    return f"s.__s[{_READ.index(keys) + 1}]"


def _typed(keys: tuple[str, ...]) -> tuple[str, str]:
    index = _READ.index(keys) + 1
    assert index <= _TYPED
    return f"s.__t[{index}]", f"s.__s[{index}]"


_TABLES = (
    "CASE s.type WHEN 'track' THEN CASE WHEN coalesce(s.event_table, '') <> '' "
    "AND NOT coalesce(s.event_overflow, false) "
    "THEN ['tracks', s.event_table] ELSE ['tracks'] END "
    f"WHEN 'identify' THEN CASE WHEN coalesce({_text(('userId',))}, '') <> '' "
    "THEN ['identifies', 'users'] ELSE ['identifies'] END "
    f"WHEN 'group' THEN CASE WHEN coalesce({_text(('groupId',))}, '') <> '' "
    "THEN ['groups', 'accounts'] ELSE ['groups'] END "
    "WHEN 'page' THEN ['pages'] WHEN 'screen' THEN ['screens'] WHEN 'alias' THEN ['aliases'] "
    "ELSE []::VARCHAR[] END")


def is_duplicate(earlier: Loaded, received_at: datetime, home_table: str,
                 window: timedelta) -> bool:
    """Whether a message repeats `earlier` (same source and messageId, already loaded)."""
    return home_table in earlier.tables or abs(received_at - earlier.received_at) <= window


class Batch:
    def __init__(self, catalog: Catalog, window: timedelta, now: datetime,
                 max_tables: int = MAX_TABLES) -> None:
        self.catalog = catalog
        self.window = window
        self.now = now
        self.max_tables = max_tables
        self._loaded_at = now.isoformat(sep=" ")
        # rows with values kept in _overflow, per (source, "columns" or "tables")
        self.overflows: Counter[tuple[str, str]] = Counter()
        self.merges: dict[tuple[str, str], dict[str, Merge]] = {}
        self.duplicate_rows: list[tuple[Any, ...]] = []
        self.loaded: Counter[str] = Counter()
        self.duplicates: Counter[str] = Counter()
        self.received: Counter[datetime] = Counter()  # loaded messages per receivedAt
        self.reloaded = 0  # messages loaded again after the window (their ledger row grows)
        # The messages to load, as indices into `_records`, in order of receipt; those loaded
        # before (after the window) are also in `_again`. Kept as indices and made columns
        # for the stage at once: no object per message for Python's garbage collector.
        self._records: list[Record] = []
        self._keys: list[int] = []
        self._load: list[int] = []
        self._again: set[int] = set()
        self._times: dict[str, datetime] = {}
        self.written: set[tuple[str, str]] = set()  # (schema, table) that `write` loaded into

    def judge(self, known: dict[int, Loaded], records: list[Record],
              keys: list[int] | None = None) -> None:
        """Sort each record into loaded or duplicate, in order of receipt (then log order):
        the first received of two copies is the one loaded, and merges apply in that order.

        `keys` are the records' `message_key`s, in the same order, when the caller has them.
        """
        if keys is None:
            keys = [message_key(r.source, r.message_id) for r in records]
        self._records, self._keys = records, keys
        times = self._times  # a request's messages share their receivedAt
        # Messages first seen in this batch (key -> index): made a `Loaded` in `known` only
        # when the batch has the key again (rare).
        firsts: dict[int, int] = {}
        load = self._load
        for i in _in_receipt_order(records):
            record = records[i]
            key = keys[i]
            received = times.get(record.received_at)
            if received is None:
                received = times[record.received_at] = (
                    parse_timestamp(record.received_at) or self.now)
            if key not in known and key not in firsts:  # new to the ledger and to the batch
                firsts[key] = i
            else:
                seen = self._seen_before(known, firsts, key, record, received)
                if seen is None:
                    continue
                if not seen:
                    self._again.add(i)
            if record.type in ("identify", "group"):
                self._merge(record)
            load.append(i)
        ordered = [records[i] for i in load]
        self.loaded = Counter(map(_SOURCE, ordered))
        self.received = Counter(map(times.__getitem__, map(_RECEIVED_AT, ordered)))

    def _seen_before(self, known: dict[int, Loaded], firsts: dict[int, int], key: int,
                     record: Record, received: datetime) -> bool | None:
        """A record whose key the ledger or the batch already has: None when it is a duplicate
        (recorded as such), else whether it is new to the ledger."""
        earlier = known.get(key)
        if earlier is None:
            first = self._records[firsts.pop(key)]
            earlier = known[key] = Loaded(key, first.source, first.message_id, first.type,
                                          [HOME_TABLE.get(first.type, first.type)],
                                          self._times[first.received_at], self.now)
        home = HOME_TABLE.get(record.type, record.type)
        # A key of another message (a 63-bit hash collision) is not this message: its
        # ledger insert then fails and the message ends in load_errors, never dropped.
        if (earlier.source, earlier.message_id) != (record.source, record.message_id):
            known[key] = Loaded(key, record.source, record.message_id, record.type, [home],
                                received, self.now)
            return True
        if is_duplicate(earlier, received, home, self.window):
            self.duplicate_rows.append((
                record.source, record.message_id, record.type, received, self.now,
                earlier.received_at, earlier.loaded_at, record.shard, record.offset))
            self.duplicates[record.source] += 1
            return None
        earlier.tables = sorted({*earlier.tables, home})  # loaded again after the window
        self.reloaded += 1
        return False

    def _merge(self, record: Record) -> None:
        found = patch(msgspec.json.decode(record.body))
        if found is None:
            return
        merges = self.merges.setdefault((record.source, found.table), {})
        merge_ = merges.get(found.id)
        if merge_ is None:
            merge_ = merges[found.id] = Merge(found.received_at)
        merge_.add(found.received_at, found.values)

    # -- writing (inside the loader's transaction) --------------------------------------------
    def write(self, con: duckdb.DuckDBPyConnection) -> int:
        """Write everything in the caller's transaction. Returns rows with type conflicts."""
        conflicts = 0
        if self._load:
            self._create_stage(con)  # in the transaction: a rollback removes it too
            tracks: dict[str, list[Load]] = {}  # per source: the tracks table, event tables
            plans = self._plans(con)
            self.written = {(plan.schema, plan.table) for plan in plans}
            known = self._event_firsts(con, plans)
            for plan in plans:
                load = self._prepare(con, plan, known.get((plan.schema, plan.table)))
                if plan.call == "track":
                    tracks.setdefault(plan.schema, []).append(load)
                else:
                    conflicts += self._insert_load(con, load)
            for loads in tracks.values():
                loads.sort(key=lambda load: load[0].event_tables)  # tracks first (stable)
                plain = not any(wide.is_wide(plan, columns) for plan, columns, _ in loads)
                shared = shared_load(loads) if plain else None
                if shared is None:
                    for load in loads:
                        conflicts += self._insert_load(con, load)
                    continue
                con.execute(shared[0])
                for statement in shared[1:-1]:
                    conflicts += _insert(con, statement)
                con.execute(shared[-1])
            for (schema, table), merges in self.merges.items():
                found, overflows = upsert(con, self.catalog, schema, table, merges, self.now)
                conflicts += found
                self.overflows[(schema, "columns")] += overflows
            self._bookkeeping(con)
            con.execute(f"DROP TABLE {STAGE}")
        ledger.insert(con, "duplicates", ledger.DUPLICATES, self.duplicate_rows)
        return conflicts

    def _create_stage(self, con: duckdb.DuckDBPyConnection) -> None:
        records, keys, again = self._records, self._keys, self._again
        ordered = [records[i] for i in self._load]
        epoch = {text: (moment - _EPOCH) // _MICROSECOND for text, moment in self._times.items()}
        columns = {
            "seq": range(len(ordered)),
            "key": [keys[i] for i in self._load],
            "source": list(map(_SOURCE, ordered)),
            "message_id": list(map(attrgetter("message_id"), ordered)),
            "type": list(map(attrgetter("type"), ordered)),
            "received_at": pa.array(list(map(epoch.__getitem__, map(_RECEIVED_AT, ordered))),
                                    pa.int64()).view(ledger.TS),
            "shard": list(map(attrgetter("shard"), ordered)),
            "offset": list(map(attrgetter("offset"), ordered)),
            "is_new": [i not in again for i in self._load] if again else [True] * len(ordered),
            "body": list(map(bytes.decode, map(attrgetter("body"), ordered))),
        }
        arrow = pa.table({name: values if isinstance(values, pa.Array)
                          else pa.array(values, type=_STAGE_TYPES[name])
                          for name, values in columns.items()})
        with registered(con, _ARROW, arrow):
            typed = ", ".join(pointer(*keys) for keys in _READ[:_TYPED])
            pointers = ", ".join(pointer(*keys) for keys in _READ)
            con.execute(
                f"CREATE TEMP TABLE {STAGE} AS SELECT *, CASE WHEN type = 'track' "
                f"THEN {_text(('event',))} END AS event_text, "
                "NULL::VARCHAR AS event_table, NULL::BOOLEAN AS event_overflow "
                f"FROM (SELECT * REPLACE (body::JSON AS body), "
                f"json_type(body, [{typed}]) AS __t, "
                f"json_extract_string(body, [{pointers}]) AS __s FROM {_ARROW}) s")

    def _plans(self, con: duckdb.DuckDBPyConnection) -> list[TablePlan]:
        """One plan per table the batch writes, with its columns discovered."""
        # The structure of each group's messages: what json_group_structure computes (a macro
        # in DuckDB 2: the structure of one JSON array of the values), on the bodies as they
        # are, so each body is parsed once here rather than once per object extracted.
        groups = con.execute(
            "SELECT source, type, event_text, count(*), "
            "json_structure('[' || string_agg(body::VARCHAR, ',') || ']') -> 0 "
            f"FROM {STAGE} GROUP BY source, type, event_text ORDER BY ALL").fetchall()
        plans: dict[tuple[str, str], TablePlan] = {}
        mapping: list[tuple[str, str, str, bool]] = []
        tables_left: dict[str, int] = {}  # per source: event tables it may still get
        for source, call, event, count, structure in groups:
            found = _decode(structure)
            if not isinstance(found, dict):
                found = {}
            context = found.get("context")
            payload = found.get("traits" if call in ("identify", "group") else "properties")
            home = HOME_TABLE[call]
            for table, kind, is_event in ((home, home, False),) + (
                    ((event_table(event), "tracks", True),) if call == "track" else ()):
                if is_event:
                    new = table and (source, table) not in plans and (
                        (source, table) not in self.catalog.tables)
                    if new:
                        if source not in tables_left:  # counting the catalog's: once
                            tables_left[source] = (self.max_tables
                                                   - self.catalog.event_tables(source))
                        left = tables_left[source]
                        tables_left[source] = left - 1
                    if new and left <= 0:  # beyond the limit: the tracks row keeps it
                        mapping.append((source, event, table, True))
                        plans[(source, "tracks")].event_overflow = True
                        self.overflows[(source, "tables")] += count
                        continue
                    mapping.append((source, event, table, False))
                    if not table:
                        continue
                plan = plans.setdefault((source, table), TablePlan(source, table, kind, call,
                                                                   event_tables=is_event))
                plan.context = merge(plan.context, context)
                if is_event or call not in ("track", "alias"):
                    plan.payload = merge(plan.payload, payload)
        if mapping:
            tables = pa.table({"source": [m[0] for m in mapping],
                               "event_text": [m[1] for m in mapping],
                               "event_table": [m[2] for m in mapping],
                               "overflow": [m[3] for m in mapping]})
            with registered(con, _EVENTS, tables):
                con.execute(f"UPDATE {STAGE} s SET event_table = m.event_table, "
                            f"event_overflow = m.overflow FROM {_EVENTS} m "
                            "WHERE s.type = 'track' AND s.source = m.source "
                            "AND s.event_text = m.event_text")
        for plan in plans.values():
            plan.discover()
            while plan.mixed:
                pending, plan.mixed = plan.mixed, []
                found = con.execute(plan.mixed_query(pending)).fetchall()[0]
                for item, structure in zip(pending, found, strict=True):
                    walk(_decode(structure), item.keys, item.name, item.depth + 1,
                         plan.leaves, plan.mixed)
        return list(plans.values())

    def _insert_load(self, con: duckdb.DuckDBPyConnection, load: Load) -> int:
        """Insert one table's rows; returns the rows with type conflicts."""
        plan, columns, types = load
        if not wide.is_wide(plan, columns):
            return _insert(con, plan.insert_statement(columns, types))
        conflicts, overflows = wide.load(con, plan, columns, types)
        self.overflows[(plan.schema, "columns")] += overflows
        return conflicts

    def _new_columns(self, plan: TablePlan) -> list[Column]:
        types = {**base_columns(plan.kind), **self.catalog.columns(plan.schema, plan.table)}
        return [c for c in plan.columns(self._loaded_at) if c.name not in types]

    def _event_firsts(self, con: duckdb.DuckDBPyConnection,
                      plans: list[TablePlan]) -> dict[tuple[str, str], dict[str, str]]:
        """The first values of the new columns of a source's event tables, in one query when
        many tables have new columns (one query per table costs ~7 ms each)."""
        found: dict[tuple[str, str], dict[str, str]] = {}
        per_source: dict[str, list[tuple[str, list[Column]]]] = {}
        for plan in plans:
            new = self._new_columns(plan) if plan.event_tables else []
            if new and all(wide.is_long(c, plan.kind) for c in new):
                per_source.setdefault(plan.schema, []).append((plan.table, new))
        for schema, groups in per_source.items():
            if len(groups) < EVENT_FIRSTS_TABLES:
                continue
            firsts = wide.first_values_of_events(con, schema, groups)
            for table, columns in groups:
                found[(schema, table)] = {c.name: firsts[(table, k)]
                                          for k, c in enumerate(columns) if (table, k) in firsts}
        return found

    def _prepare(self, con: duckdb.DuckDBPyConnection, plan: TablePlan,
                 known: dict[str, str] | None = None) -> Load:
        """The columns of a table's load with their types; creates what is missing, up to the
        table's column limit (the columns beyond it go to `plan.overflow`). `known`: the first
        values of its new columns, when `_event_firsts` has them."""
        columns = plan.columns(self._loaded_at)
        types = {**base_columns(plan.kind), **self.catalog.columns(plan.schema, plan.table)}
        new = [c for c in columns if c.name not in types]
        if known is None:
            long = [c for c in new if wide.is_long(c, plan.kind)]
            if len(long) <= wide.WIDE:  # few: one side-by-side query is quicker
                long = []
            short = [c for c in new if not wide.is_long(c, plan.kind)] if long else new
            firsts = wide.first_values(con, plan, long)
            if short:
                firsts += con.execute(plan.first_values_query(short)).fetchall()[0]
            known = {c.name: first for c, first in zip(long + short, firsts, strict=True)
                     if first is not None}
        for column in new:
            if column.name in known:
                types[column.name] = infer(msgspec.json.decode(known[column.name]))
        found = [c for c in new if c.name in types]
        room = max(0, self.catalog.room(plan.schema, plan.table, plan.kind))
        plan.overflow = [c for c in found if wide.is_long(c, plan.kind)][room:]
        beyond = {c.name for c in plan.overflow}
        kept = [c for c in columns if c.name in types and c.name not in beyond]
        wanted = {c.name: types[c.name] for c in kept}
        if plan.overflow or plan.event_overflow:
            wanted[OVERFLOW] = types[OVERFLOW] = ColumnType.JSON
        for statement in self.catalog.ensure(plan.schema, plan.table, plan.kind, wanted):
            con.execute(statement)
        return plan, kept, types

    def _bookkeeping(self, con: duckdb.DuckDBPyConnection) -> None:
        loaded_at = f"TIMESTAMP {literal(self.now.isoformat(sep=' '))}"
        found = identifiers([_typed(keys) for keys in IDENTIFIER_PATHS])
        con.execute(
            "INSERT INTO _trackd.messages SELECT s.key, s.source, s.message_id, s.type, "
            f"{_TABLES}, s.received_at, {loaded_at}, {found} FROM {STAGE} s WHERE s.is_new")
        if self.reloaded:
            # One row per key: a message loaded again twice in the batch (two more tables)
            # would otherwise update its row with one of them only.
            con.execute(
                "UPDATE _trackd.messages m SET tables = "
                "list_sort(list_distinct(m.tables || t.tables)) "
                f"FROM (SELECT s.key, flatten(list({_TABLES})) AS tables FROM {STAGE} s "
                "WHERE NOT s.is_new GROUP BY s.key) t WHERE m.key = t.key")
        con.execute(
            "INSERT INTO _trackd.events SELECT s.key, s.source, s.message_id, s.type, "
            f"s.received_at, trk_timestamp({', '.join(_typed(('timestamp',)))}), "
            f"{_text(('userId',))}, {_text(('anonymousId',))}, s.body, s.shard, s.\"offset\" "
            f"FROM {STAGE} s")


def _in_receipt_order(records: list[Record]) -> Iterable[int]:
    """The records' indices by (receivedAt, shard, offset): usually the order they came in."""
    order = list(map(_ORDER, records))
    if all(map(le, order, islice(order, 1, None))):
        return range(len(records))
    return sorted(range(len(records)), key=order.__getitem__)


def _insert(con: duckdb.DuckDBPyConnection, statement: str) -> int:
    """Run an INSERT ... RETURNING whether each row has type conflicts; count those."""
    return con.execute(statement).fetchall().count((True,))


def _decode(structure: str | None) -> Any:
    return None if structure is None else msgspec.json.decode(structure)
