"""One load transaction's content: which messages load, their rows, and the bookkeeping.

`Batch.judge` walks the records in log order and decides, against the ledger and the earlier
records of the same batch, whether each message is a duplicate (`is_duplicate`). `Batch.write`
then runs inside the loader's transaction: DDL, bulk inserts per table, users/accounts
upserts, and the ledger rows.

Dedup is per source and by messageId: a message repeats a loaded one when it was received
within the dedup window of it, or, at any distance in time, when it would go to the same table
(the same call type), so a table never holds one messageId twice.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import duckdb

from trackd.log.records import Record
from trackd.warehouse import ledger
from trackd.warehouse.catalog import Catalog
from trackd.warehouse.identity import identifiers
from trackd.warehouse.ledger import Loaded, message_key
from trackd.warehouse.naming import HOME_TABLE, STANDARD_TABLES, quote
from trackd.warehouse.shape import shape
from trackd.warehouse.upsert import Merge, upsert
from trackd.warehouse.values import parse_timestamp

_ROWS = "__trackd_batch"


def is_duplicate(earlier: Loaded, received_at: datetime, home_table: str,
                 window: timedelta) -> bool:
    """Whether a message repeats `earlier` (same source and messageId, already loaded)."""
    return home_table in earlier.tables or abs(received_at - earlier.received_at) <= window


class Batch:
    def __init__(self, catalog: Catalog, window: timedelta, now: datetime) -> None:
        self.catalog = catalog
        self.window = window
        self.now = now
        self.rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.merges: dict[tuple[str, str], dict[str, Merge]] = {}
        self.new: dict[int, tuple[Any, ...]] = {}
        self.more_tables: dict[int, list[str]] = {}
        self.duplicate_rows: list[tuple[Any, ...]] = []
        self.event_rows: list[tuple[Any, ...]] = []
        self.loaded: Counter[str] = Counter()
        self.duplicates: Counter[str] = Counter()
        self.received: list[datetime] = []

    def judge(self, known: dict[int, Loaded],
              messages: list[tuple[Record, dict[str, Any]]]) -> None:
        """Sort each message into loaded or duplicate, in order of receipt (then log order):
        the first received of two copies is the one loaded, and merges apply in that order."""
        ordered = sorted(messages, key=lambda m: (m[0].received_at, m[0].shard, m[0].offset))
        for record, message in ordered:
            key = message_key(record.source, record.message_id)
            received = parse_timestamp(record.received_at) or self.now
            home = HOME_TABLE.get(record.type, record.type)
            earlier = known.get(key)
            if earlier is not None and (earlier.source, earlier.message_id) == (
                    record.source, record.message_id) and is_duplicate(
                    earlier, received, home, self.window):
                self.duplicate_rows.append((
                    record.source, record.message_id, record.type, received, self.now,
                    earlier.received_at, earlier.loaded_at, record.shard, record.offset))
                self.duplicates[record.source] += 1
                continue
            tables = self._add(record, message, received)
            if earlier is None:
                known[key] = Loaded(key, record.source, record.message_id, record.type,
                                    tables, received, self.now)
                self.new[key] = (key, record.source, record.message_id, record.type, tables,
                                 received, self.now, *identifiers(message))
            else:  # loaded again after the window, into other tables
                earlier.tables = sorted(set(earlier.tables) | set(tables))
                if key in self.new:
                    self.new[key] = (*self.new[key][:4], earlier.tables, *self.new[key][5:])
                else:
                    self.more_tables[key] = earlier.tables
            self.loaded[record.source] += 1
            self.received.append(received)

    def _add(self, record: Record, message: dict[str, Any], received: datetime) -> list[str]:
        shaped = shape(message)
        tables: list[str] = []
        for row in shaped.rows:
            row.values["uuid_ts"] = self.now
            self.rows.setdefault((record.source, row.table), []).append(row.values)
            tables.append(row.table)
        for patch in shaped.patches:
            merges = self.merges.setdefault((record.source, patch.table), {})
            merge = merges.get(patch.id)
            if merge is None:
                merge = merges[patch.id] = Merge(patch.received_at)
            merge.add(patch.received_at, patch.values)
            tables.append(patch.table)
        timestamp = message.get("timestamp")
        self.event_rows.append((
            message_key(record.source, record.message_id), record.source, record.message_id,
            record.type, received,
            parse_timestamp(timestamp) if isinstance(timestamp, str) else None,
            message.get("userId"), message.get("anonymousId"), record.body.decode(),
            record.shard, record.offset))
        return tables

    def write(self, con: duckdb.DuckDBPyConnection) -> int:
        """Write everything in the caller's transaction. Returns rows with type conflicts."""
        conflicts = 0
        for (schema, table), rows in self.rows.items():
            kind = table if table in STANDARD_TABLES else "tracks"
            fitted = self.catalog.fit(schema, table, kind, rows)
            for statement in fitted.ddl:
                con.execute(statement)
            con.register(_ROWS, self.catalog.arrow(schema, table, fitted.rows))
            try:
                con.execute(f"INSERT INTO {quote(schema)}.{quote(table)} BY NAME "
                            f"SELECT * FROM {_ROWS}")
            finally:
                con.unregister(_ROWS)
            conflicts += fitted.conflicts
        for (schema, table), merges in self.merges.items():
            conflicts += upsert(con, self.catalog, schema, table, merges, self.now)
        ledger.insert(con, "messages", ledger.MESSAGES, list(self.new.values()))
        for key, tables in self.more_tables.items():
            ledger.add_tables(con, key, tables)
        ledger.insert(con, "duplicates", ledger.DUPLICATES, self.duplicate_rows)
        ledger.insert(con, "events", ledger.EVENTS, self.event_rows)
        return conflicts
