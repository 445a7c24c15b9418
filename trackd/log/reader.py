"""log -> consumers: read after a named consumer's position, commit it, trim what all passed.

Offsets live in `<log_dir>/offsets.db`, one row per (consumer, shard). A consumer commits only
after its own output is durable, so a crash makes it read some records again, never skip one;
downstream stages remove those repeats by messageId.

Tracking plan violations (each shard's `violations` table) are trimmed with the frames: a
violation goes once it is older than the oldest frame the shard still holds (every consumer
has passed the messages of its time; none left: all of them) and, when a consumer loads
violations (the warehouse, which mirrors its last violation id per shard with
`commit_violations`), once that consumer has loaded it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from trackd.log import shard
from trackd.log.records import Position, Record, advanced

_OFFSETS_SCHEMA = """
CREATE TABLE IF NOT EXISTS offsets (
    consumer TEXT NOT NULL,
    shard TEXT NOT NULL,
    "offset" INTEGER NOT NULL,
    PRIMARY KEY (consumer, shard)
);
CREATE TABLE IF NOT EXISTS consumers (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS violation_offsets (
    consumer TEXT NOT NULL,
    shard TEXT NOT NULL,
    last_id INTEGER NOT NULL,
    PRIMARY KEY (consumer, shard)
);
"""
_TRIM_VIOLATIONS = (
    "DELETE FROM violations WHERE id <= ? AND (received_at < (SELECT received_at FROM frames "
    "ORDER BY seq LIMIT 1) OR NOT EXISTS (SELECT 1 FROM frames))")
VIOLATION_COLUMNS = ("received_at, source, message_id, type, event, violation, path, rule, "
                     "message, plan_version, action")
_COLUMNS = "seq, count, source, received_at, message_ids, types, sizes, body"
_SELECT = f"SELECT {_COLUMNS} FROM frames WHERE seq > ? ORDER BY seq"
_EVERY_ID = 2**63 - 1
_decode_ids = msgspec.json.Decoder(list[str]).decode
_decode_sizes = msgspec.json.Decoder(list[int]).decode
_encode = msgspec.json.Encoder().encode


class LogReader:
    """Reads every shard under `log_dir`; safe to use from several threads."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conns: dict[str, sqlite3.Connection] = {}
        self._offsets = sqlite3.connect(log_dir / "offsets.db", isolation_level=None,
                                        check_same_thread=False, timeout=30)
        self._offsets.execute("PRAGMA journal_mode=WAL")
        self._offsets.execute("PRAGMA synchronous=FULL")
        self._offsets.executescript(_OFFSETS_SCHEMA)

    def close(self) -> None:
        with self._lock:
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()
            self._offsets.close()

    def _conn(self, name: str) -> sqlite3.Connection:
        conn = self._conns.get(name)
        if conn is None:
            conn = shard.connect(shard.shard_path(self.log_dir, name), write=False)
            self._conns[name] = conn
        return conn

    def _query(self, name: str, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        """Rows of `sql` on one shard; none while a new shard's writer has not made its tables.

        Call with the lock held.
        """
        try:
            return self._conn(name).execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise

    def shards(self) -> list[str]:
        return shard.list_shards(self.log_dir)

    # -- consumers -------------------------------------------------------------------------
    def register(self, consumer: str) -> None:
        """Declare a consumer, so trimming waits for it from now on."""
        with self._lock:
            self._offsets.execute("INSERT OR IGNORE INTO consumers VALUES (?)", (consumer,))

    def unregister(self, consumer: str) -> None:
        """Forget a consumer and its position, so trimming no longer waits for it."""
        with self._lock:
            self._offsets.execute("BEGIN")
            self._offsets.execute("DELETE FROM consumers WHERE name = ?", (consumer,))
            self._offsets.execute("DELETE FROM offsets WHERE consumer = ?", (consumer,))
            self._offsets.execute("DELETE FROM violation_offsets WHERE consumer = ?",
                                  (consumer,))
            self._offsets.execute("COMMIT")

    def consumers(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._offsets.execute("SELECT name FROM consumers ORDER BY 1")]

    def position(self, consumer: str) -> Position:
        with self._lock:
            rows = self._offsets.execute(
                'SELECT shard, "offset" FROM offsets WHERE consumer = ?', (consumer,))
            return {name: offset for name, offset in rows}

    def commit(self, consumer: str, records: Iterable[Record] | Position) -> None:
        """Advance `consumer` past `records` (or to an explicit position). Durable on return."""
        position = dict(records) if isinstance(records, dict) else advanced({}, records)
        if not position:
            return
        with self._lock:
            self._offsets.execute("BEGIN")
            self._offsets.execute("INSERT OR IGNORE INTO consumers VALUES (?)", (consumer,))
            self._offsets.executemany(
                'INSERT INTO offsets VALUES (?, ?, ?) ON CONFLICT (consumer, shard) '
                'DO UPDATE SET "offset" = max("offset", excluded."offset")',
                [(consumer, name, offset) for name, offset in position.items()])
            self._offsets.execute("COMMIT")

    def commit_violations(self, consumer: str, position: Position) -> None:
        """Record that `consumer` loaded every violation up to `position` (per shard, the last
        id), so trimming may drop them; from an empty position on, trimming waits for it.
        Durable on return."""
        rows = [(consumer, name, last) for name, last in position.items()] or [(consumer, "", 0)]
        with self._lock:
            self._offsets.execute("BEGIN")
            self._offsets.executemany(
                "INSERT INTO violation_offsets VALUES (?, ?, ?) ON CONFLICT (consumer, shard) "
                "DO UPDATE SET last_id = max(last_id, excluded.last_id)", rows)
            self._offsets.execute("COMMIT")

    def violations_loaded(self, consumers: Sequence[str]) -> Position | None:
        """Per shard, the last violation id every one of `consumers` that loads violations has
        loaded; None when none of them does."""
        with self._lock:
            rows = self._offsets.execute(
                "SELECT consumer, shard, last_id FROM violation_offsets").fetchall()
        loaders = {consumer for consumer, _, _ in rows} & set(consumers)
        if not loaders:
            return None
        loaded: dict[str, dict[str, int]] = {name: {} for name in loaders}
        for consumer, name, last in rows:
            if consumer in loaders and name:  # "": the mark of a loader with nothing loaded
                loaded[consumer][name] = last
        shards = {name for per in loaded.values() for name in per}
        return {name: min(per.get(name, 0) for per in loaded.values()) for name in shards}

    # -- reading ---------------------------------------------------------------------------
    def read(self, consumer: str, limit: int = 5000,
             position: Position | None = None) -> list[Record]:
        """Up to `limit` records after the consumer's position (or `position`), shard by shard."""
        if position is None:
            position = self.position(consumer)
        out: list[Record] = []
        for name in self.shards():
            if len(out) >= limit:
                break
            out.extend(self.read_shard(name, position.get(name, 0), limit - len(out)))
        return out

    def read_shard(self, name: str, after: int, limit: int) -> list[Record]:
        """Up to `limit` records of one shard with offsets above `after`, in order."""
        out: list[Record] = []
        if limit <= 0:
            return out
        with self._lock:
            try:
                cursor = self._conn(name).execute(_SELECT, (after,))
            except sqlite3.OperationalError as exc:  # a new shard's writer has not made it yet
                if "no such table" in str(exc):
                    return out
                raise
            try:
                for row in cursor:
                    out.extend(_unpack(name, row, after, limit - len(out)))
                    if len(out) >= limit:
                        break
            finally:
                cursor.close()
        return out

    def heads(self) -> Position:
        """The last offset written in each shard."""
        heads: Position = {}
        with self._lock:
            for name in shard.list_shards(self.log_dir):
                rows = self._query(name, "SELECT max(seq) FROM frames")
                heads[name] = (rows[0][0] if rows else 0) or 0
        return heads

    def lag(self, consumer: str) -> int:
        """How many records the consumer has not committed yet (approximate after trims)."""
        position = self.position(consumer)
        return sum(max(0, head - position.get(name, 0)) for name, head in self.heads().items())

    def find(self, message_id: str, source: str | None = None) -> list[Record]:
        """Records with this messageId still in the log (a scan: for lookups, not hot paths).

        SQLite picks the frames whose id list holds the id's JSON text; the exact match is
        made on the decoded list (an id can also appear inside another, escaped).
        """
        out: list[Record] = []
        for name in self.shards():
            with self._lock:
                rows = self._query(
                    name, f"SELECT {_COLUMNS} FROM frames WHERE instr(message_ids, ?) > 0 "
                    "AND (? IS NULL OR source = ?) ORDER BY seq",
                    (_encode(message_id), source, source))
            for row in rows:
                out.extend(r for r in _unpack(name, row, 0, row[1]) if r.message_id == message_id)
        return out

    def quarantined(self, *, source: str | None = None, message_id: str | None = None,
                    limit: int = 100) -> list[dict[str, object]]:
        """Refused messages with their reasons, newest first."""
        out: list[dict[str, object]] = []
        for name in self.shards():
            with self._lock:
                rows = self._query(
                    name, "SELECT id, received_at, source, message_id, batch_index, reason, body "
                    "FROM quarantine WHERE (? IS NULL OR source = ?) "
                    "AND (? IS NULL OR message_id = ?) ORDER BY id DESC LIMIT ?",
                    (source, source, message_id, message_id, limit))
            out.extend({"shard": name, "id": i, "receivedAt": rec, "source": src,
                        "messageId": mid, "batchIndex": idx, "reason": reason,
                        "body": bytes(body).decode("utf-8", "replace")}
                       for i, rec, src, mid, idx, reason, body in rows)
        out.sort(key=lambda q: str(q["receivedAt"]), reverse=True)
        return out[:limit]

    def read_violations(self, after: Position, limit: int = 5000, *,
                        message_id: str | None = None) -> list[tuple[Any, ...]]:
        """Tracking plan violations after `after` (per shard, the last id read), shard by
        shard in order, each as (shard, id, *VIOLATION_COLUMNS); only those of one message
        when `message_id` is given."""
        out: list[tuple[Any, ...]] = []
        for name in self.shards():
            if len(out) >= limit:
                break
            with self._lock:
                rows = self._query(
                    name, f"SELECT id, {VIOLATION_COLUMNS} FROM violations WHERE id > ? "
                    "AND (? IS NULL OR message_id = ?) ORDER BY id LIMIT ?",
                    (after.get(name, 0), message_id, message_id, limit - len(out)))
            out.extend((name, *row) for row in rows)
        return out

    # -- trimming --------------------------------------------------------------------------
    def trim(self, consumers: Sequence[str] | None = None) -> int:
        """Delete what every registered consumer has committed, and the violations that go
        with it (see the module's doc). Returns how many messages."""
        names = list(consumers) if consumers is not None else self.consumers()
        if not names:
            return 0
        positions = [self.position(c) for c in names]
        violations = self.violations_loaded(names)
        deleted = 0
        for name in self.shards():
            passed = min(p.get(name, 0) for p in positions)
            if passed <= 0:
                continue
            conn = shard.connect(shard.shard_path(self.log_dir, name), write=False)
            try:
                # only frames passed whole: a position inside a frame keeps all of it
                deleted += sum(n for (n,) in conn.execute(
                    "DELETE FROM frames WHERE seq <= ? RETURNING count", (passed,)))
                loaded = (violations.get(name, 0) if violations is not None
                          else _EVERY_ID)
                if loaded > 0:
                    conn.execute(_TRIM_VIOLATIONS, (loaded,))
            except sqlite3.OperationalError as exc:  # a shard from before violations existed
                if "no such table" not in str(exc):
                    raise
            finally:
                conn.close()
        return deleted


def _unpack(name: str, row: tuple[Any, ...], after: int, limit: int) -> list[Record]:
    """The records of one frame row with offsets above `after`, at most `limit` of them."""
    seq, count, source, received_at, ids, types, sizes, body = row
    first = seq - count + 1
    skip = max(0, after + 1 - first)
    lengths = _decode_sizes(sizes)
    message_ids = _decode_ids(ids)
    kinds = _decode_ids(types)
    data = memoryview(body)
    at = sum(lengths[:skip])
    out: list[Record] = []
    for index in range(skip, min(count, skip + limit)):
        end = at + lengths[index]
        if end == at:  # a message erased by a privacy deletion: its offset stays, unread
            continue
        out.append(Record(name, first + index, source, message_ids[index], kinds[index],
                          received_at, bytes(data[at:end])))
        at = end
    return out
