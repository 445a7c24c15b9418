"""One destination's durable delivery ledger: its queue, its history and its dead letters.

A SQLite file per destination under `<data_dir>/destinations/` (WAL, synchronous=FULL: a
commit returns after fsync). Each routed log record becomes one row:

    pending -> retrying -> ... -> delivered | dead        (skipped: routed elsewhere)

Guarantees:
- `add` is durable on return, so the worker commits its log offset only after it; adding the
  same (messageId, source) twice keeps the first row (a re-read after a crash, or a client's
  duplicate, is not sent twice).
- `plan` keeps order per user: only a user's oldest active row (its head) can be due, a user's
  later rows ride only in the same request as its head, and a user is never in two requests at
  once. A head waiting for its retry holds back that user alone.
- Dead letters keep their body and last error until a replay delivers them; delivered and
  skipped rows lose their body and are pruned after the retention.

Safe to use from several threads (one connection behind a lock); another process (replay)
may open the same file at the same time.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trackd.destinations.policy import Decision, State

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    source TEXT NOT NULL,
    user_key TEXT NOT NULL,
    type TEXT NOT NULL,
    event TEXT,
    received_at TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    enqueued_at REAL NOT NULL,
    next_try REAL NOT NULL DEFAULT 0,
    last_try REAL,
    done_at REAL,
    status INTEGER,
    error TEXT,
    replayed INTEGER NOT NULL DEFAULT 0,
    body BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS deliveries_message ON deliveries(message_id, source);
CREATE INDEX IF NOT EXISTS deliveries_active ON deliveries(user_key, id)
    WHERE state IN ('pending', 'retrying');
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries(id) WHERE state = 'dead';
CREATE INDEX IF NOT EXISTS deliveries_done ON deliveries(done_at)
    WHERE state IN ('delivered', 'skipped');
"""
_ACTIVE = "state IN ('pending', 'retrying')"
_HEADS = (f"SELECT d.id, d.user_key, d.next_try FROM deliveries d JOIN "
          f"(SELECT min(id) AS id FROM deliveries WHERE {_ACTIVE} GROUP BY user_key) h "
          f"ON d.id = h.id")
MAX_REQUEST_BYTES = 450_000
"""A batch stops growing before this many body bytes (Segment accepts 500 KB per batch)."""


def ledger_path(directory: Path, name: str) -> Path:
    """`<directory>/<name>.db`; names that are not file-safe get a slug and a short hash."""
    if re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", name) and not name.startswith("."):
        return directory / f"{name}.db"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:60] or "destination"
    return directory / f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}.db"


@dataclass(frozen=True, slots=True)
class Intake:
    """A log record routed for this destination: `refusal` set means skipped, with why."""

    message_id: str
    source: str
    user_key: str
    type: str
    event: str | None
    received_at: str
    body: bytes
    refusal: str | None = None


@dataclass(frozen=True, slots=True)
class Due:
    """A row ready to be sent."""

    id: int
    user_key: str
    attempts: int
    enqueued_at: float
    body: bytes


@dataclass(frozen=True, slots=True)
class Plan:
    batches: list[list[Due]]
    wake_at: float | None  # the next retry that becomes due, if any


@dataclass(frozen=True, slots=True)
class Failed:
    """A row after a failed attempt, for the metrics: did it die?"""

    id: int
    dead: bool


class Ledger:
    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self._lock = threading.Lock()
        if readonly:
            self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True,
                                         isolation_level=None, check_same_thread=False,
                                         timeout=30)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                         timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(SCHEMA)
        self._conn.execute("PRAGMA busy_timeout=30000")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return result

    # -- intake ----------------------------------------------------------------------------
    def add(self, intakes: Sequence[Intake], now: float) -> int:
        """Store routed records durably; returns how many new rows are pending."""
        def write(conn: sqlite3.Connection) -> int:
            added = 0
            for i in intakes:
                skipped = i.refusal is not None
                state = State.SKIPPED if skipped else State.PENDING
                cur = conn.execute(
                    "INSERT OR IGNORE INTO deliveries (message_id, source, user_key, type, "
                    "event, received_at, state, enqueued_at, done_at, error, body) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (i.message_id, i.source, i.user_key, i.type, i.event, i.received_at,
                     state.value, now, now if skipped else None,
                     i.refusal, None if skipped else i.body))
                added += cur.rowcount if not skipped else 0
            return added

        return int(self._write(write))

    def rows(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, bool]]:
        """(messageId, source) -> (row id, still pending or retrying) for the keys it holds."""
        with self._lock:
            out: dict[tuple[str, str], tuple[int, bool]] = {}
            for key in keys:
                row = self._conn.execute(
                    f"SELECT id, {_ACTIVE} FROM deliveries WHERE message_id = ? AND source = ?",
                    key).fetchone()
                if row is not None:
                    out[key] = (int(row[0]), bool(row[1]))
            return out

    # -- dispatch --------------------------------------------------------------------------
    def plan(self, now: float, *, busy: frozenset[str] | set[str], slots: int, size: int,
             max_bytes: int = MAX_REQUEST_BYTES) -> Plan:
        """Up to `slots` requests of up to `size` rows each, due at `now`, users not in `busy`.

        A user's rows go into one request only, oldest first, and stop at the first row that
        is not due (so a later row never overtakes an earlier one).
        """
        batches: list[list[Due]] = []
        if slots < 1:
            return Plan(batches, None)
        with self._lock:
            heads = self._conn.execute(
                f"{_HEADS} WHERE d.next_try <= ? ORDER BY d.id LIMIT ?",
                (now, slots * size + len(busy))).fetchall()
            wake = self._conn.execute(
                f"SELECT min(next_try) FROM ({_HEADS} WHERE d.next_try > ?)", (now,)).fetchone()
            current: list[Due] = []
            current_bytes = 0
            full = False
            for head_id, user_key, _ in heads:
                if user_key in busy:
                    continue
                if len(current) >= size:
                    batches.append(current)
                    current, current_bytes = [], 0
                    if len(batches) >= slots:
                        break
                rows = self._conn.execute(
                    "SELECT id, attempts, enqueued_at, next_try, body FROM deliveries "
                    f"WHERE user_key = ? AND {_ACTIVE} AND id >= ? ORDER BY id LIMIT ?",
                    (user_key, head_id, size - len(current))).fetchall()
                for taken, (row_id, attempts, enqueued_at, next_try, body) in enumerate(rows):
                    body = bytes(body)
                    if next_try > now:
                        break
                    if current and current_bytes + len(body) > max_bytes:
                        if taken:
                            break  # the rest of this user waits for a later request
                        batches.append(current)
                        current, current_bytes = [], 0
                        if len(batches) >= slots:
                            full = True
                            break
                    current.append(Due(row_id, user_key, attempts, enqueued_at, body))
                    current_bytes += len(body)
                if full:
                    break
            if current:
                batches.append(current)
        return Plan(batches, wake[0] if wake else None)

    def delivered(self, ids: Sequence[int], status: int, now: float) -> None:
        """Mark rows delivered (durable on return); their bodies are dropped."""
        self._write(lambda conn: conn.executemany(
            "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, status = ?, "
            "error = NULL, last_try = ?, done_at = ?, next_try = 0, body = NULL WHERE id = ?",
            [(status, now, now, i) for i in ids]))

    def failed(self, ids: Sequence[int], decide: Callable[[int, float], Decision],
               status: int | None, error: str, now: float) -> list[Failed]:
        """Record a failed attempt: `decide(attempts, age)` says retrying (when) or dead."""
        def write(conn: sqlite3.Connection) -> list[Failed]:
            out: list[Failed] = []
            for i in ids:
                row = conn.execute("SELECT attempts, enqueued_at FROM deliveries WHERE id = ? "
                                   f"AND {_ACTIVE}", (i,)).fetchone()
                if row is None:
                    continue
                attempts = row[0] + 1
                decision = decide(attempts, now - row[1])
                dead = decision.state is State.DEAD
                conn.execute(
                    "UPDATE deliveries SET state = ?, attempts = ?, next_try = ?, status = ?, "
                    "error = ?, last_try = ?, done_at = ? WHERE id = ?",
                    (decision.state.value, attempts, decision.next_try, status, error, now,
                     now if dead else None, i))
                out.append(Failed(i, dead))
            return out

        return list(self._write(write))

    # -- reading ---------------------------------------------------------------------------
    def active(self) -> int:
        """Rows pending or retrying."""
        with self._lock:
            return int(self._conn.execute(
                f"SELECT count(*) FROM deliveries WHERE {_ACTIVE}").fetchone()[0])

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._conn.execute("SELECT state, count(*) FROM deliveries GROUP BY state")
            return {state: n for state, n in rows}

    def find(self, message_id: str) -> list[dict[str, Any]]:
        """Every row of this messageId (one per source), oldest first."""
        with self._lock:
            cur = self._conn.execute(
                "SELECT message_id, source, state, attempts, enqueued_at, next_try, last_try, "
                "done_at, status, error, replayed FROM deliveries WHERE message_id = ? "
                "ORDER BY id", (message_id,))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def dead_letters(self, *, source: str | None = None, since: str | None = None,
                     until: str | None = None, event: str | None = None,
                     limit: int = 1_000_000) -> list[tuple[int, str, str, bytes]]:
        """(id, source, messageId, body) of dead letters, oldest first; bounds on receivedAt
        are ISO strings compared as text (every stored receivedAt has the same format)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, source, message_id, body FROM deliveries WHERE state = 'dead' "
                "AND body IS NOT NULL AND (?1 IS NULL OR source = ?1) "
                "AND (?2 IS NULL OR received_at >= ?2) AND (?3 IS NULL OR received_at < ?3) "
                "AND (?4 IS NULL OR event = ?4) ORDER BY id LIMIT ?5",
                (source, since, until, event, limit)).fetchall()
        return [(i, s, m, bytes(b)) for i, s, m, b in rows]

    def replayed(self, ids: Sequence[int], status: int, now: float) -> None:
        """Dead letters a replay delivered: now delivered (replayed = 1)."""
        self._write(lambda conn: conn.executemany(
            "UPDATE deliveries SET state = 'delivered', replayed = 1, status = ?, error = NULL, "
            "done_at = ?, last_try = ?, body = NULL WHERE id = ? AND state = 'dead'",
            [(status, now, now, i) for i in ids]))

    def replay_failed(self, ids: Sequence[int], status: int | None, error: str,
                      now: float) -> None:
        """Dead letters a replay could not deliver: they stay dead with the new error."""
        self._write(lambda conn: conn.executemany(
            "UPDATE deliveries SET status = ?, error = ?, last_try = ? "
            "WHERE id = ? AND state = 'dead'", [(status, error, now, i) for i in ids]))

    def prune(self, before: float) -> int:
        """Delete delivered and skipped rows finished before `before`; dead letters stay."""
        return int(self._write(lambda conn: conn.execute(
            "DELETE FROM deliveries WHERE state IN ('delivered', 'skipped') AND done_at < ?",
            (before,)).rowcount))
