"""One shard: a SQLite file in WAL mode written by exactly one gateway process.

The log stores one row per request (a *frame*), not one per message: a batch of 100 messages
is one INSERT of one ~50 KB row, which is what lets one writer thread keep up with many
requests. Offsets still count messages: a frame's `seq` is the offset of its LAST message, so
its messages have the offsets `seq - count + 1 .. seq`, a consumer's position can stop in the
middle of a frame, and `seq` is the primary key (frames are found by offset with no index).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- offset of the frame's last message
    count INTEGER NOT NULL,                 -- messages in the frame
    received_at TEXT NOT NULL,
    source TEXT NOT NULL,
    message_ids BLOB NOT NULL,              -- JSON array, one string per message
    types BLOB NOT NULL,                    -- JSON array, one call type per message
    sizes BLOB NOT NULL,                    -- JSON array, each message's length in `body`
    body BLOB NOT NULL                      -- the messages' JSON, one after the other
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    source TEXT NOT NULL,
    message_id TEXT,
    batch_index INTEGER,
    reason TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS quarantine_message_id ON quarantine(message_id);
CREATE TABLE IF NOT EXISTS violations (     -- tracking plan violations (see records.Violation)
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    source TEXT NOT NULL,
    message_id TEXT,
    type TEXT NOT NULL,
    event TEXT,
    violation TEXT NOT NULL,
    path TEXT NOT NULL,
    rule TEXT NOT NULL,
    message TEXT NOT NULL,
    plan_version INTEGER NOT NULL,
    action TEXT NOT NULL
);
"""

# Shards written before frames kept one row per message in `events`, whose `offset` was the
# message's offset. Each becomes a one-message frame with the same offset, so every consumer's
# stored position stays valid, and the AUTOINCREMENT high-water mark carries over.
_MIGRATE = """
INSERT INTO frames (seq, count, received_at, source, message_ids, types, sizes, body)
SELECT "offset", 1, received_at, source, json_array(message_id), json_array(type),
       json_array(length(body)), body
FROM events ORDER BY "offset";
INSERT INTO sqlite_sequence (name, seq)
SELECT 'frames', seq FROM sqlite_sequence WHERE name = 'events'
AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'frames');
UPDATE sqlite_sequence
SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0))
WHERE name = 'frames';
DROP TABLE events;
"""

SUFFIX = ".log.db"
# 16 KB pages: a 50 KB frame spans 4 pages instead of 13, and SQLite writes each page to the
# WAL (and again at checkpoint) with its own system calls; measured writer CPU per batched
# message -50 % against 4 KB pages (64 KB pages: -40 %).
PAGE_SIZE = 16384


def shard_path(log_dir: Path, name: str) -> Path:
    return log_dir / f"{name}{SUFFIX}"


def list_shards(log_dir: Path) -> list[str]:
    """Every shard in the log directory, including those of workers no longer running."""
    if not log_dir.is_dir():
        return []
    return sorted(p.name[: -len(SUFFIX)] for p in log_dir.glob(f"*{SUFFIX}"))


def connect(path: Path, *, write: bool, fsync: bool = True) -> sqlite3.Connection:
    """Open a shard. Writers get WAL + synchronous=FULL: a COMMIT returns after fsync (not
    with `fsync=False`: throwaway data, `trackd serve --ephemeral`).

    Any connection upgrades a shard still in the one-row-per-message layout (a reader may be
    the first to open the shard of a worker that no longer runs).
    """
    # A writer prepares one INSERT per number of rows in a commit (up to 256): cache them all.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30,
                           cached_statements=512 if write else 128)
    conn.execute("PRAGMA busy_timeout=30000")
    if write:
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # takes effect only in a new file
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if fsync else 'OFF'}")
        conn.executescript(SCHEMA)
    if _has_table(conn, "events"):
        _migrate(conn)
    return conn


def last_seq(conn: sqlite3.Connection) -> int:
    """The offset of the last message ever written to the shard (0 for none), trims included."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'frames'").fetchone()
    top = conn.execute("SELECT max(seq) FROM frames").fetchone()
    return max(row[0] if row else 0, top[0] or 0)


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        if _has_table(conn, "events"):  # not done meanwhile by another connection
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            for statement in _MIGRATE.split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
