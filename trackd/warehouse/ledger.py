"""trackd's bookkeeping tables in the `_trackd` schema, written in the loader's transaction.

- `offsets`: the log position the warehouse has loaded up to (per shard).
- `messages`: one row per (source, messageId) loaded: the dedup memory and "where is my event".
- `duplicates`: messages skipped because they repeat a loaded one.
- `load_errors`: messages that could not be loaded even alone.
- `events`: the messages as received, for the Profile API (identifies and groups kept; other
  calls pruned after `EVENT_RETENTION`).

Because these rows commit in the same DuckDB transaction as the warehouse rows, a crash at any
moment leaves the warehouse and its position in step: the next start resumes exactly after the
last committed batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa

from trackd.log.records import Position
from trackd.warehouse.db import registered

EVENT_RETENTION = timedelta(days=14)
DUPLICATE_RETENTION = timedelta(days=30)
_KEYS = "__trackd_keys"


def message_key(source: str, message_id: str) -> int:
    """The 63-bit dedup key of a message: a hash of its source and messageId."""
    digest = hashlib.blake2b(f"{source}\x00{message_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


@dataclass(slots=True)
class Loaded:
    """What the ledger remembers of a loaded message."""

    key: int
    source: str
    message_id: str
    type: str
    tables: list[str]
    received_at: datetime
    loaded_at: datetime


def position(con: duckdb.DuckDBPyConnection) -> Position:
    """The log position the committed warehouse contains."""
    return {shard: int(offset) for shard, offset in
            con.execute('SELECT shard, "offset" FROM _trackd.offsets').fetchall()}


def save_position(con: duckdb.DuckDBPyConnection, new: Position) -> None:
    if not new:
        return
    con.execute("DELETE FROM _trackd.offsets WHERE shard IN (SELECT unnest(?::VARCHAR[]))",
                [list(new)])
    insert(con, "offsets", OFFSETS, list(new.items()))


def find(con: duckdb.DuckDBPyConnection, keys: Iterable[int]) -> dict[int, Loaded]:
    """Ledger entries for these keys (an index lookup, cheap whatever the ledger's size)."""
    wanted = pa.table({"key": pa.array(sorted(set(keys)), pa.int64())})
    if wanted.num_rows == 0:
        return {}
    with registered(con, _KEYS, wanted):
        rows = con.execute(
            "SELECT key, source, message_id, type, tables, received_at, loaded_at "
            f"FROM _trackd.messages WHERE key IN (SELECT key FROM {_KEYS})").fetchall()
    return {r[0]: Loaded(*r) for r in rows}


def insert(con: duckdb.DuckDBPyConnection, table: str, columns: dict[str, pa.DataType],
           rows: Sequence[Sequence[Any]]) -> None:
    """Bulk insert `rows` (tuples in `columns` order) into `_trackd.<table>`."""
    if not rows:
        return
    names = list(columns)
    data = pa.table({name: pa.array([r[i] for r in rows], type=columns[name])
                     for i, name in enumerate(names)})
    with registered(con, _KEYS, data):
        con.execute(f"INSERT INTO _trackd.{table} BY NAME SELECT * FROM {_KEYS}")


TS = pa.timestamp("us")
OFFSETS = {"shard": pa.string(), "offset": pa.int64()}
MESSAGES = {"key": pa.int64(), "source": pa.string(), "message_id": pa.string(),
            "type": pa.string(), "tables": pa.list_(pa.string()), "received_at": TS,
            "loaded_at": TS, "user_id": pa.string(), "anonymous_id": pa.string(),
            "email": pa.string()}
DUPLICATES = {"source": pa.string(), "message_id": pa.string(), "type": pa.string(),
              "received_at": TS, "seen_at": TS, "original_received_at": TS,
              "original_loaded_at": TS, "shard": pa.string(), "offset": pa.int64()}
LOAD_ERRORS = {"source": pa.string(), "message_id": pa.string(), "type": pa.string(),
               "received_at": pa.string(), "failed_at": TS, "error": pa.string(),
               "shard": pa.string(), "offset": pa.int64()}
EVENTS = {"key": pa.int64(), "source": pa.string(), "message_id": pa.string(),
          "type": pa.string(), "received_at": TS, "timestamp": TS, "user_id": pa.string(),
          "anonymous_id": pa.string(), "body": pa.string(), "shard": pa.string(),
          "offset": pa.int64()}


def prune(con: duckdb.DuckDBPyConnection, now: datetime) -> None:
    """Drop profile events past their retention (identifies and groups stay) and old
    duplicate records."""
    con.execute("DELETE FROM _trackd.events WHERE type NOT IN ('identify', 'group') "
                "AND received_at < ?", [now - EVENT_RETENTION])
    con.execute("DELETE FROM _trackd.duplicates WHERE seen_at < ?", [now - DUPLICATE_RETENTION])
