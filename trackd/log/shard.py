"""One shard: a SQLite file in WAL mode written by exactly one gateway process."""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    "offset" INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    source TEXT NOT NULL,
    message_id TEXT NOT NULL,
    type TEXT NOT NULL,
    body BLOB NOT NULL
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
"""

SUFFIX = ".log.db"


def shard_path(log_dir: Path, name: str) -> Path:
    return log_dir / f"{name}{SUFFIX}"


def list_shards(log_dir: Path) -> list[str]:
    """Every shard in the log directory, including those of workers no longer running."""
    if not log_dir.is_dir():
        return []
    return sorted(p.name[: -len(SUFFIX)] for p in log_dir.glob(f"*{SUFFIX}"))


def connect(path: Path, *, write: bool) -> sqlite3.Connection:
    """Open a shard. Writers get WAL + synchronous=FULL: a COMMIT returns after fsync."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA busy_timeout=30000")
    if write:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(SCHEMA)
    return conn
