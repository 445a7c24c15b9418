"""Deletion from the embedded SQLite log: frames, quarantine and violations of every shard.

A frame (one request's messages back to back) that holds a subject's message is rewritten in
place: that message's bytes, id and type are removed and its size set to 0, so the frame keeps
its offsets (consumers' positions stay valid) and readers skip the erased slot. Quarantined
messages of the subjects are deleted, and the violations of deleted messages.

The connection runs with `secure_delete` on, so SQLite overwrites what it frees with zeros;
then the WAL is checkpointed and truncated. Bytes of the subjects left in free pages by earlier
trims (which ran without secure_delete) are found by scanning the file, and such a shard is
VACUUMed. `scrub_sqlite` does the same for any other SQLite file of the data dir.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from trackd.log import shard
from trackd.observability import get_logger
from trackd.privacy.subjects import Subjects

log = get_logger("privacy")
_decode_list = msgspec.json.Decoder(list[str]).decode
_decode_sizes = msgspec.json.Decoder(list[int]).decode
_encode = msgspec.json.Encoder().encode
CHECKPOINT_TRIES = 600  # 0.1 s apart: a minute for readers to let go of an old snapshot


def connect_secure(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA secure_delete=ON")
    return conn


def widen_from_log(log_dir: Path, subjects: Subjects) -> None:
    """Add to `subjects` the anonymous ids linked to its users by messages still in the log."""
    if not subjects.user_ids:
        return
    for name in shard.list_shards(log_dir):
        conn = connect_secure(shard.shard_path(log_dir, name))
        try:
            rows = [(sizes, body) for sizes, body, source in _iterate(
                conn, "SELECT sizes, body, source FROM frames")
                if subjects.in_source(source) and subjects.pattern().search(body)]
        finally:
            conn.close()
        for sizes, body in rows:
            for message in _split(sizes, body):
                if message:
                    try:
                        subjects.widen(msgspec.json.decode(message))
                    except msgspec.DecodeError:
                        continue


class SqliteLogErasure:
    """The embedded log's side of a deletion (`trackd.privacy.stores.LogErasure`)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir

    async def widen(self, subjects: Subjects) -> None:
        await asyncio.to_thread(widen_from_log, self.log_dir, subjects)

    async def erase(self, subjects: Subjects) -> int:
        return await asyncio.to_thread(erase_log, self.log_dir, subjects)

    async def expire_quarantine(self, source: str, cutoff: str) -> int:
        return await asyncio.to_thread(expire_quarantine, self.log_dir, source, cutoff)


def erase_log(log_dir: Path, subjects: Subjects) -> int:
    """Remove the subjects' messages from every shard; returns how many were removed."""
    removed = 0
    for name in shard.list_shards(log_dir):
        path = shard.shard_path(log_dir, name)
        conn = connect_secure(path)
        try:
            removed += _erase_shard(conn, subjects)
        finally:
            conn.close()
        scrub_sqlite(path, subjects)
    return removed


def _rows(conn: sqlite3.Connection, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise


def _iterate(conn: sqlite3.Connection, sql: str) -> Iterator[Any]:
    """The rows of `sql`, one at a time (none while a new shard has no tables yet)."""
    try:
        cursor = conn.execute(sql)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return
        raise
    try:
        yield from cursor
    finally:
        cursor.close()


def _split(sizes: bytes, body: bytes) -> list[bytes]:
    out, at = [], 0
    for length in _decode_sizes(sizes):
        out.append(bytes(body[at:at + length]))
        at += length
    return out


def _erase_shard(conn: sqlite3.Connection, subjects: Subjects) -> int:
    pattern = subjects.pattern()
    removed = 0
    erased_ids: list[str] = []
    # Only the frames that may hold an id are kept in memory (the log can be large).
    frames = [row for row in _iterate(conn, "SELECT seq, source, message_ids, types, sizes, "
                                             "body FROM frames")
              if subjects.in_source(row[1]) and pattern.search(row[5])]
    for seq, _source, ids, types, sizes, body in frames:
        messages = _split(sizes, body)
        message_ids, kinds = _decode_list(ids), _decode_list(types)
        keep = [not m or not subjects.holds_bytes(m) for m in messages]
        if all(keep):
            continue
        for index, kept in enumerate(keep):
            if not kept:
                erased_ids.append(message_ids[index])
                messages[index], message_ids[index], kinds[index] = b"", "", ""
                removed += 1
        conn.execute("UPDATE frames SET message_ids = ?, types = ?, sizes = ?, body = ? "
                     "WHERE seq = ?", (_encode(message_ids), _encode(kinds),
                                       _encode([len(m) for m in messages]),
                                       b"".join(messages), seq))
    doomed = [(row_id,) for row_id, source, body in _iterate(
        conn, "SELECT id, source, body FROM quarantine")
        if subjects.in_source(source) and subjects.holds_bytes(bytes(body))]
    conn.executemany("DELETE FROM quarantine WHERE id = ?", doomed)
    removed += len(doomed)
    for start in range(0, len(erased_ids), 500):
        chunk = [i for i in erased_ids[start:start + 500] if i]
        if chunk:
            _rows(conn, f"DELETE FROM violations WHERE message_id IN "
                  f"({', '.join('?' * len(chunk))})", tuple(chunk))
    return removed


def holds_bytes(path: Path, subjects: Subjects) -> bool:
    """Whether the file holds any subject id's bytes (a missing or empty file holds none).
    Mapped, not read: a warehouse file may be larger than the memory."""
    try:
        with path.open("rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                return False
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return subjects.pattern().search(data) is not None
    except (FileNotFoundError, ValueError):
        return False


def checkpoint(conn: sqlite3.Connection) -> bool:
    """Fold the WAL into the file and truncate it to 0 bytes; False if readers kept it busy."""
    for _ in range(CHECKPOINT_TRIES):
        busy, _frames, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not busy:
            return True
        time.sleep(0.1)
    return False


def scrub_sqlite(path: Path, subjects: Subjects) -> bool:
    """Leave no byte of the subjects in an SQLite file and its WAL: checkpoint (truncating
    the WAL), and VACUUM when the file still holds them (free pages written before
    secure_delete). Returns whether the file and its WAL are clean."""
    wal = path.with_name(path.name + "-wal")
    if not holds_bytes(path, subjects) and not holds_bytes(wal, subjects):
        return True
    conn = connect_secure(path)
    try:
        checkpoint(conn)
        if holds_bytes(path, subjects):
            conn.execute("VACUUM")
            checkpoint(conn)
    finally:
        conn.close()
    clean = not holds_bytes(path, subjects) and not holds_bytes(wal, subjects)
    if not clean:
        log.warning("a file still holds a deleted subject's bytes", extra={"file": str(path)})
    return clean


def expire_quarantine(log_dir: Path, source: str, cutoff: str) -> int:
    """Delete a source's quarantined messages received before `cutoff` (ISO-8601, UTC) from
    every shard; returns how many. Retention."""
    deleted = 0
    for name in shard.list_shards(log_dir):
        conn = connect_secure(shard.shard_path(log_dir, name))
        try:
            deleted += len(_rows(conn, "DELETE FROM quarantine WHERE source = ? AND "
                                 "received_at < ? RETURNING id", (source, cutoff)))
        finally:
            conn.close()
    return deleted
