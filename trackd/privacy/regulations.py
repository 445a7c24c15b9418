"""The record of regulations (Segment's regulations API): `<data_dir>/privacy/regulations.db`.

A regulation names its subjects only by salted hash (`Keys.subject_hash`). The ids themselves
are needed until the work is done, so they wait in `work`, a table of their own, and that row
is deleted when the regulation ends, with `secure_delete` on and a rollback journal truncated
at each commit: the file then holds no byte of them. After a crash, `unfinished()` gives the
regulations to run again (their `work` row is still there).

Statuses: INITIALIZED (recorded) -> RUNNING -> FINISHED | PARTIAL_SUCCESS (a store failed,
others did their part) | FAILED (nothing could be done). Each store the regulation touches has
its own status and the rows (or files) it removed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trackd.messages.enrich import iso
from trackd.privacy.keys import privacy_dir

TYPES = ("SUPPRESS_ONLY", "UNSUPPRESS", "DELETE_INTERNAL", "SUPPRESS_WITH_DELETE_INTERNAL",
         "DELETE_ONLY", "SUPPRESS_WITH_DELETE")
SUBJECT_TYPES = ("USER_ID", "ANONYMOUS_ID")
MAX_SUBJECTS = 5000
DONE = ("FINISHED", "PARTIAL_SUCCESS", "FAILED")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS regulations (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subjects TEXT NOT NULL,            -- JSON array of salted hashes, never an id
    subject_count INTEGER NOT NULL,
    sources TEXT,                      -- JSON array, NULL: every source
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS stores (
    regulation_id TEXT NOT NULL,
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    status TEXT NOT NULL,
    rows INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    PRIMARY KEY (regulation_id, name)
);
CREATE TABLE IF NOT EXISTS work (      -- the ids, until the regulation ends
    regulation_id TEXT PRIMARY KEY,
    subject_ids TEXT NOT NULL
);
"""


def stores_of(regulation_type: str, *, warehouse: bool, archive: bool, memory: bool,
              destinations: bool, scoped: bool = False) -> list[str]:
    """The stores a regulation of this type works on, in the order it works on them.

    `scoped`: the regulation names its sources. Then the last scan of every file is left
    out: the subjects' messages in other sources are kept on purpose, so their bytes stay."""
    names: list[str] = []
    if regulation_type in ("SUPPRESS_ONLY", "UNSUPPRESS", "SUPPRESS_WITH_DELETE_INTERNAL",
                           "SUPPRESS_WITH_DELETE"):
        names.append("suppression")
    if "DELETE" in regulation_type:
        names.append("log")
        if warehouse:
            names.append("warehouse")
        if archive:
            names.append("archive")
        if memory:
            names.append("memory")
        names.append("ledgers")
        if destinations and regulation_type in ("DELETE_ONLY", "SUPPRESS_WITH_DELETE"):
            names.append("destinations")
        if not scoped:
            names.append("files")
    return names


@dataclass(frozen=True)
class Work:
    """What the executor needs to run one regulation."""

    id: str
    type: str
    subject_type: str
    ids: dict[str, list[str]]  # {"user_ids": [...], "anonymous_ids": [...]}
    sources: list[str] | None
    stores: list[tuple[str, str]]  # (name, status) in order


class Regulations:
    """The regulations file. Thread-safe (one connection behind a lock)."""

    def __init__(self, data_dir: Path) -> None:
        directory = privacy_dir(data_dir)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(directory / "regulations.db", isolation_level=None,
                                     check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA secure_delete=ON")
        self._conn.execute("PRAGMA journal_mode=TRUNCATE")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def create(self, regulation_type: str, subject_type: str, ids: dict[str, list[str]],
               hashes: list[str], sources: list[str] | None, stores: list[str]) -> str:
        regulation_id = uuid.uuid4().hex[:20]
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                seq = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM regulations"
                                   ).fetchone()[0]
                conn.execute("INSERT INTO regulations VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                             (regulation_id, regulation_type, subject_type, json.dumps(hashes),
                              len(hashes), None if sources is None else json.dumps(sources),
                              "INITIALIZED", iso(datetime.now(UTC)), seq))
                conn.executemany("INSERT INTO stores VALUES (?, ?, ?, 'INITIALIZED', 0, NULL)",
                                 [(regulation_id, name, i) for i, name in enumerate(stores)])
                conn.execute("INSERT INTO work VALUES (?, ?)", (regulation_id, json.dumps(ids)))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return regulation_id

    def unfinished(self) -> list[Work]:
        """Regulations not ended yet, oldest first (to run, or run again after a crash)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT r.id, r.type, r.subject_type, w.subject_ids, r.sources FROM regulations r "
                "JOIN work w ON w.regulation_id = r.id WHERE r.status NOT IN "
                "('FINISHED', 'PARTIAL_SUCCESS', 'FAILED') ORDER BY r.seq").fetchall()
            out = []
            for regulation_id, kind, subject_type, ids, sources in rows:
                stores = self._conn.execute(
                    "SELECT name, status FROM stores WHERE regulation_id = ? ORDER BY position",
                    (regulation_id,)).fetchall()
                out.append(Work(regulation_id, kind, subject_type, json.loads(ids),
                                None if sources is None else json.loads(sources),
                                [(n, s) for n, s in stores]))
        return out

    def set_subject_ids(self, regulation_id: str, ids: dict[str, list[str]]) -> None:
        """The ids to delete, widened (a user's linked anonymous ids), kept for a resume."""
        with self._lock:
            self._conn.execute("UPDATE work SET subject_ids = ? WHERE regulation_id = ?",
                               (json.dumps(ids), regulation_id))

    def set_status(self, regulation_id: str, status: str) -> None:
        with self._lock:
            self._conn.execute("UPDATE regulations SET status = ? WHERE id = ?",
                               (status, regulation_id))

    def set_store(self, regulation_id: str, name: str, status: str, rows: int = 0,
                  error: str | None = None) -> None:
        with self._lock:
            self._conn.execute("UPDATE stores SET status = ?, rows = max(rows, ?), error = ? "
                               "WHERE regulation_id = ? AND name = ?",
                               (status, rows, error, regulation_id, name))

    def finish(self, regulation_id: str, status: str) -> None:
        """End a regulation: its status, its end time, and its ids forgotten for good."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("UPDATE regulations SET status = ?, finished_at = ? WHERE id = ?",
                             (status, iso(datetime.now(UTC)), regulation_id))
                conn.execute("DELETE FROM work WHERE regulation_id = ?", (regulation_id,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def get(self, regulation_id: str) -> dict[str, Any] | None:
        found = self._select("WHERE id = ?", (regulation_id,))
        return found[0] if found else None

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._select("ORDER BY seq DESC LIMIT ?", (limit,))

    def _select(self, where: str, params: tuple[object, ...]) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, type, subject_type, subject_count, status, created_at, finished_at "
                f"FROM regulations {where}", params).fetchall()
            out = []
            for row in rows:
                stores = self._conn.execute(
                    "SELECT name, status, rows, error FROM stores WHERE regulation_id = ? "
                    "ORDER BY position", (row[0],)).fetchall()
                regulation: dict[str, Any] = {
                    "id": row[0], "regulationType": row[1], "subjectType": row[2],
                    "subjectCount": row[3], "status": row[4], "createdAt": row[5],
                    "finishedAt": row[6],
                    "stores": [{"name": n, "status": s, "rows": r,
                                **({"error": e} if e else {})} for n, s, r, e in stores]}
                out.append(regulation)
        return out
