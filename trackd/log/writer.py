"""gateway -> log: one writer thread per shard, group commit, reply only after fsync.

Every `append` call packs its messages into frames (one per request: see `shard`) and puts
them on a queue. The writer thread takes everything waiting, writes it in one transaction and
COMMITs (WAL, synchronous=FULL: the commit returns after fsync), then wakes all the callers at
once. Many concurrent requests thus share one fsync, and a request of 100 messages is one row.

Back-pressure: the bytes waiting for a commit are bounded; past the bound `append` raises
`LogFull` at once instead of buffering, and the gateway answers 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from trackd.errors import LogClosed, LogFull, LogWriteFailed
from trackd.log import shard
from trackd.log.records import Entry, Refused, Violation

_INSERT_FRAMES = ("INSERT INTO frames (seq, count, received_at, source, message_ids, types, "
                  "sizes, body) VALUES ")
_FRAME_COLUMNS = 8
_MAX_ROWS_PER_INSERT = 256  # 2,048 parameters, well under SQLite's limit of 32,766
MAX_FRAME_MESSAGES = 4096
_INSERT_REFUSED = (
    "INSERT INTO quarantine (received_at, source, message_id, batch_index, reason, body) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_VIOLATIONS = (
    "INSERT INTO violations (received_at, source, message_id, type, event, violation, path, "
    "rule, message, plan_version, action) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_MAX_GROUP_BYTES = 32 * 1024 * 1024

CommitObserver = Callable[[float, int], None]
"""Called in the writer thread after each commit with (seconds, records committed)."""

_Frame = tuple[int, str, str, bytes, bytes, bytes, bytes]
"""(count, received_at, source, message_ids, types, sizes, body): a row of `frames` less seq."""
_Job = tuple[list[_Frame], Sequence[Refused], "asyncio.Future[None]", int, Sequence[Violation]]
_encode = msgspec.json.Encoder().encode


class LogWriter:
    """The single appender of one shard file.

    >>> writer = LogWriter(path, max_pending_bytes=64 << 20)
    >>> writer.start(asyncio.get_running_loop())
    >>> await writer.append(entries, refused)   # durable when this returns
    >>> writer.close()                           # commits what is queued, then stops
    """

    def __init__(self, path: Path, *, max_pending_bytes: int,
                 on_commit: CommitObserver | None = None, fsync: bool = True) -> None:
        self.path = path
        self._fsync = fsync
        self._max_pending = max_pending_bytes
        self._pending = 0
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._on_commit = on_commit
        self._seq = 0  # offset of the last message committed
        self.last_error: str | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # fail here, at start-up, not later
        conn = shard.connect(self.path, write=True, fsync=self._fsync)
        self._seq = shard.last_seq(conn)
        self._thread = threading.Thread(target=self._run, args=(conn,), name="log-writer",
                                        daemon=True)
        self._thread.start()

    @property
    def pending_bytes(self) -> int:
        return self._pending

    @property
    def healthy(self) -> bool:
        return not self._closing and self.last_error is None

    async def append(self, entries: Sequence[Entry], refused: Sequence[Refused] = (),
                     violations: Sequence[Violation] = ()) -> None:
        """Store entries, refused messages and their plan violations; return once they are
        fsync'd.

        Raises LogFull (too much waiting), LogClosed (shutting down) or LogWriteFailed (the
        commit failed, e.g. disk full: none of these records were stored).
        """
        if self._closing or self._loop is None:
            raise LogClosed("the log is shutting down")
        size = sum(len(e.body) for e in entries) + sum(len(r.body) for r in refused)
        if self._pending + size > self._max_pending and self._pending > 0:
            raise LogFull("too many messages waiting for the disk")
        fut: asyncio.Future[None] = self._loop.create_future()
        self._pending += size
        self._queue.put((frames(entries), refused, fut, size, violations))
        # Not shielded: a request cancelled meanwhile cancels only its wait; the writer still
        # commits its messages, and `_resolve` skips a future already done.
        await fut

    def close(self) -> None:
        """Commit everything already queued, then stop the thread."""
        self._closing = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _run(self, conn: sqlite3.Connection) -> None:
        try:
            stop = False
            while not stop:
                first = self._queue.get()
                if first is None:
                    break
                jobs = [first]
                size = first[3]
                while size < _MAX_GROUP_BYTES:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stop = True
                        break
                    jobs.append(job)
                    size += job[3]
                self._commit(conn, jobs)
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        started = time.perf_counter()
        rows: list[tuple[object, ...]] = []
        seq = self._seq
        for job in jobs:
            for frame in job[0]:
                seq += frame[0]
                rows.append((seq, *frame))
        refused = [(r.received_at, r.source, r.message_id, r.index, r.reason, r.body)
                   for job in jobs for r in job[1]]
        violations = [(v.received_at, v.source, v.message_id, v.type, v.event, v.violation,
                       v.path, v.rule, v.message, v.plan_version, v.action)
                      for job in jobs for v in job[4]]
        error: Exception | None = None
        messages = 0
        try:
            if refused or violations or len(rows) > _MAX_ROWS_PER_INSERT:
                conn.execute("BEGIN")
                if rows:
                    _insert_frames(conn, rows)
                if refused:
                    conn.executemany(_INSERT_REFUSED, refused)
                if violations:
                    conn.executemany(_INSERT_VIOLATIONS, violations)
                conn.execute("COMMIT")
            elif rows:
                # One statement, its own transaction: the insert, the commit and its fsync
                # happen in one call, so this thread takes the GIL back once per commit
                # (BEGIN, INSERT, COMMIT took it three times, each a wait behind a busy event
                # loop of up to the interpreter's switch interval).
                conn.execute(_insert_sql(len(rows)), [value for row in rows for value in row])
            messages, self._seq = seq - self._seq, seq
            self.last_error = None
        except sqlite3.Error as exc:
            error = LogWriteFailed(f"could not store messages: {exc}")
            self.last_error = str(exc)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        if self._on_commit is not None and error is None:
            self._on_commit(time.perf_counter() - started, messages + len(refused))
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._resolve, jobs, error)

    def _resolve(self, jobs: list[_Job], error: Exception | None) -> None:
        for _entries, _refused, fut, size, _violations in jobs:
            self._pending -= size
            if fut.done():
                continue
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)


def frames(entries: Sequence[Entry]) -> list[_Frame]:
    """Pack entries into frames: one per run of entries sharing source and receipt time (one
    request's messages share both), at most MAX_FRAME_MESSAGES messages each."""
    out: list[_Frame] = []
    start = 0
    while start < len(entries):
        first = entries[start]
        end = start + 1
        limit = min(len(entries), start + MAX_FRAME_MESSAGES)
        while (end < limit and entries[end].source == first.source
               and entries[end].received_at == first.received_at):
            end += 1
        run = entries[start:end]
        out.append((len(run), first.received_at, first.source,
                    _encode([e.message_id for e in run]), _encode([e.type for e in run]),
                    _encode([len(e.body) for e in run]), b"".join([e.body for e in run])))
        start = end
    return out


def _insert_frames(conn: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> None:
    """Insert `rows` in order, in multi-row INSERTs of power-of-two sizes up to 256 rows.

    `executemany` releases and re-takes the GIL around every row, and under load the event
    loop holds it for up to the switch interval each time: one statement per chunk makes
    that one round trip per chunk. Power-of-two sizes keep at most 9 distinct statements in
    the connection's statement cache.
    """
    start = 0
    while start < len(rows):
        size = 1 << (min(len(rows) - start, _MAX_ROWS_PER_INSERT).bit_length() - 1)
        params: list[object] = []
        for row in rows[start:start + size]:
            params += row
        conn.execute(_insert_sql(size), params)
        start += size


@functools.cache
def _insert_sql(rows: int) -> str:
    return _INSERT_FRAMES + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
