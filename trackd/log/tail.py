"""A non-committing tail of the log: what the console watches, without holding back trimming.

`LogTail` keeps its positions in memory (the frames' `seq` per shard, the quarantine's `id`
per shard) and never registers as a consumer, so the log is trimmed as if it did not exist.
A thread (at the stages' lower priority) looks at every shard each `interval` seconds and
hands what is new to its sinks: the live stream and the running counts. It opens its own
read-only connections, so it never waits on the stages' reader lock.

If trimming overtakes it (it fell more than the retention behind), it skips what is gone.
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


Sink = Callable[[Sequence[Frame], Sequence[Refusal]], None]


class LogTail:
    def __init__(self, log_dir: Path, *, interval: float = 0.1,
                 thread_setup: Callable[[], object] | None = None) -> None:
        self.log_dir = log_dir
        self.interval = interval
        self.sinks: list[Sink] = []
        self.frames: dict[str, int] = {}
        self.refusals: dict[str, int] = {}
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
        full = False
        for name in shard.list_shards(self.log_dir):
            rows = self._rows(name, "SELECT seq, source, received_at, message_ids, types, sizes, "
                              "body FROM frames WHERE seq > ? ORDER BY seq LIMIT ?",
                              (self.frames.get(name, 0), FRAME_LIMIT))
            for seq, source, received_at, ids, types, sizes, body in rows:
                frames.append(Frame(name, seq, source, received_at, _decode_list(ids),
                                    _decode_list(types), bytes(sizes), bytes(body)))
            if rows:
                self.frames[name] = rows[-1][0]
            quarantined = self._rows(
                name, "SELECT id, source, received_at, message_id, reason, body FROM quarantine "
                "WHERE id > ? ORDER BY id LIMIT ?", (self.refusals.get(name, 0), FRAME_LIMIT))
            refusals.extend(Refusal(name, i, src, rec, mid, reason, bytes(body))
                            for i, src, rec, mid, reason, body in quarantined)
            if quarantined:
                self.refusals[name] = quarantined[-1][0]
            full = full or len(rows) == FRAME_LIMIT or len(quarantined) == FRAME_LIMIT
        if frames or refusals:
            for sink in self.sinks:
                try:
                    sink(frames, refusals)
                except Exception:
                    log.exception("console sink failed")
        return full

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
            conn = self._conns.get(name)
            if conn is None:
                conn = shard.connect(shard.shard_path(self.log_dir, name), write=False)
                self._conns[name] = conn
            try:
                return list(conn.execute(sql, params).fetchall())
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):  # a new shard's writer has not made it yet
                    return []
                raise
