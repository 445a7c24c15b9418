"""A non-committing tail of the log: what the console watches, without holding back trimming.

`LogTail` keeps its positions in memory (the frames' `seq` per shard, the quarantine's and
the violations' `id` per shard) and never registers as a consumer, so the log is trimmed as
if it did not exist.
A thread (at the stages' lower priority) looks at every shard each `interval` seconds and
hands what is new to its sinks: the live stream and the running counts. It opens its own
read-only connections, so it never waits on the stages' reader lock.

If trimming overtakes it (it fell more than the retention behind), it skips what is gone.

A tracking plan violation is written in the same commit as its message, so each shard is
read in one snapshot and a violation is handed over with the message as stored (accepted or
refused), read in the same look; one whose message lies past this look's limit waits for the
next look.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from trackd.log import shard
from trackd.log.records import Violation
from trackd.observability import get_logger

log = get_logger("console")
_decode_list = msgspec.json.Decoder(list[str]).decode
_decode_sizes = msgspec.json.Decoder(list[int]).decode
FRAME_LIMIT = 500
"""Frames read per shard per look (a frame is one request: up to a few thousand messages)."""


@dataclass(slots=True)
class Frame:
    """One request's messages as stored: split lazily by `messages()`."""

    shard: str
    seq: int
    source: str
    received_at: str
    message_ids: list[str]
    types: list[str]
    sizes: bytes
    body: bytes

    def messages(self) -> list[bytes]:
        out: list[bytes] = []
        at = 0
        data = memoryview(self.body)
        for length in _decode_sizes(self.sizes):
            out.append(bytes(data[at:at + length]))
            at += length
        return out


@dataclass(frozen=True, slots=True)
class Refusal:
    shard: str
    id: int
    source: str
    received_at: str
    message_id: str | None
    reason: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Flag:
    """One tracking plan violation (a row of the log's `violations`), with its message as
    stored (`body`: None when the message is gone or has no messageId)."""

    shard: str
    id: int
    record: Violation
    body: bytes | None

    @property
    def reason(self) -> str:
        v = self.record
        return f"{v.violation} at {v.path}: {v.message}"


Sink = Callable[[Sequence[Frame], Sequence[Refusal], Sequence[Flag]], None]


class LogTail:
    def __init__(self, log_dir: Path, *, interval: float = 0.1,
                 thread_setup: Callable[[], object] | None = None) -> None:
        self.log_dir = log_dir
        self.interval = interval
        self.sinks: list[Sink] = []
        self.frames: dict[str, int] = {}
        self.refusals: dict[str, int] = {}
        self.violations: dict[str, int] = {}
        self._conns: dict[str, sqlite3.Connection] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_setup = thread_setup

    def start_at_end(self) -> None:
        """Skip what the log holds now: only what arrives from here on is seen."""
        for name in shard.list_shards(self.log_dir):
            self.frames.setdefault(name, self._scalar(name, "SELECT max(seq) FROM frames"))
            self.refusals.setdefault(name, self._scalar(name, "SELECT max(id) FROM quarantine"))
            self.violations.setdefault(name, self._scalar(name, "SELECT max(id) FROM violations"))

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="console-tail", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()

    def _run(self) -> None:
        if self._thread_setup is not None:
            self._thread_setup()
        while not self._stop.is_set():
            try:
                full = self.poll()
            except Exception:
                log.exception("console tail failed; retrying")
                full = False
            if not full:
                self._stop.wait(self.interval)

    def poll(self) -> bool:
        """Read what is new and hand it to the sinks; True when a read hit its limit."""
        frames: list[Frame] = []
        refusals: list[Refusal] = []
        flags: list[Flag] = []
        full = False
        for name in shard.list_shards(self.log_dir):
            with self._lock:
                conn = self._conn(name)
                conn.execute("BEGIN")  # one snapshot: a violation and its message together
                try:
                    full = self._look(conn, name, frames, refusals, flags) or full
                finally:
                    conn.execute("COMMIT")
        if frames or refusals or flags:
            for sink in self.sinks:
                try:
                    sink(frames, refusals, flags)
                except Exception:
                    log.exception("console sink failed")
        return full

    def _look(self, conn: sqlite3.Connection, name: str, frames: list[Frame],
              refusals: list[Refusal], flags: list[Flag]) -> bool:
        rows = _fetch(conn, "SELECT seq, source, received_at, message_ids, types, sizes, body "
                      "FROM frames WHERE seq > ? ORDER BY seq LIMIT ?",
                      (self.frames.get(name, 0), FRAME_LIMIT))
        read = [Frame(name, seq, source, received_at, _decode_list(ids), _decode_list(types),
                      bytes(sizes), bytes(body))
                for seq, source, received_at, ids, types, sizes, body in rows]
        frames.extend(read)
        if rows:
            self.frames[name] = rows[-1][0]
        quarantined = _fetch(
            conn, "SELECT id, source, received_at, message_id, reason, body FROM quarantine "
            "WHERE id > ? ORDER BY id LIMIT ?", (self.refusals.get(name, 0), FRAME_LIMIT))
        refused = [Refusal(name, i, src, rec, mid, reason, bytes(body))
                   for i, src, rec, mid, reason, body in quarantined]
        refusals.extend(refused)
        if quarantined:
            self.refusals[name] = quarantined[-1][0]
        full = len(rows) == FRAME_LIMIT or len(quarantined) == FRAME_LIMIT
        violations = _fetch(conn, "SELECT id, received_at, source, message_id, type, event, "
                            "violation, path, rule, message, plan_version, action FROM "
                            "violations WHERE id > ? ORDER BY id LIMIT ?",
                            (self.violations.get(name, 0), FRAME_LIMIT))
        if not violations:
            return full
        bodies: dict[str, bytes] = {}
        for frame in read:
            bodies.update(zip(frame.message_ids, frame.messages(), strict=False))
        bodies.update((r.message_id, r.body) for r in refused if r.message_id is not None)
        for (vid, received_at, source, message_id, kind, event, violation, path, rule, text,
             version, action) in violations:
            body = bodies.get(message_id) if message_id is not None else None
            if body is None and full:
                return True  # its message comes in a later look
            flags.append(Flag(name, vid, Violation(
                source, message_id, received_at, kind, event, violation, path, rule, text,
                version, action), body))
            self.violations[name] = vid
        return full or len(violations) == FRAME_LIMIT

    def oldest_after(self, position: dict[str, int]) -> str | None:
        """The receivedAt of the oldest message after `position` (a consumer's), if any."""
        oldest: str | None = None
        for name in shard.list_shards(self.log_dir):
            rows = self._rows(name, "SELECT received_at FROM frames WHERE seq > ? "
                              "ORDER BY seq LIMIT 1", (position.get(name, 0),))
            if rows and (oldest is None or rows[0][0] < oldest):
                oldest = rows[0][0]
        return oldest

    def _scalar(self, name: str, sql: str) -> int:
        rows = self._rows(name, sql, ())
        return int(rows[0][0] or 0) if rows else 0

    def _rows(self, name: str, sql: str, params: tuple[object, ...]) -> list[Any]:
        with self._lock:
            return _fetch(self._conn(name), sql, params)

    def _conn(self, name: str) -> sqlite3.Connection:
        conn = self._conns.get(name)
        if conn is None:
            conn = shard.connect(shard.shard_path(self.log_dir, name), write=False)
            self._conns[name] = conn
        return conn


def _fetch(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> list[Any]:
    try:
        return list(conn.execute(sql, params).fetchall())
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # a new shard's writer has not made it yet
            return []
        raise
