"""Ingestor.single in process, on a real log writer: the 32 KB limit checked by the ingestor
itself (the HTTP layer stops reading sooner, so only a direct call reaches this check)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from trackd.errors import ValidationFailed
from trackd.gateway.ingest import Ingestor, Outcome
from trackd.log import shard
from trackd.log.writer import LogWriter
from trackd.messages import limits
from trackd.observability import Registry
from trackd.settings import SourceSettings

SOURCES = (SourceSettings(name="web", write_keys=["wk"]),)


def message_of(size: int) -> bytes:
    head = b'{"type":"track","userId":"u","event":"E","messageId":"m-%d","properties":{"p":"'
    start = head % size
    body = start + b"x" * (size - len(start) - 3) + b'"}}'
    assert len(body) == size
    return body


def single(path: Path, body: bytes) -> Outcome:
    async def run() -> Outcome:
        writer = LogWriter(path, max_pending_bytes=1 << 20)
        writer.start(asyncio.get_running_loop())
        try:
            return await Ingestor(SOURCES, writer, Registry()).single("track", body, "wk", None)
        finally:
            writer.close()
    return asyncio.run(run())


def stored(path: Path) -> tuple[list[str], int]:
    """(message_ids of the frames, rows in quarantine) read straight from the shard."""
    conn = sqlite3.connect(path)
    try:
        ids = [row[0].decode() if isinstance(row[0], bytes) else row[0]
               for row in conn.execute("SELECT message_ids FROM frames ORDER BY seq")]
        (quarantined,) = conn.execute("SELECT count(*) FROM quarantine").fetchone()
    finally:
        conn.close()
    return ids, quarantined


def test_a_message_of_exactly_32768_bytes_is_stored(tmp_path: Path) -> None:
    path = shard.shard_path(tmp_path, "gw0")
    outcome = single(path, message_of(limits.MAX_MESSAGE_BYTES))
    assert (outcome.status, outcome.body) == (200, {"success": True})
    assert stored(path) == ([f'["m-{limits.MAX_MESSAGE_BYTES}"]'], 0)


def test_one_byte_more_is_413_and_nothing_is_stored(tmp_path: Path) -> None:
    path = shard.shard_path(tmp_path, "gw0")
    with pytest.raises(ValidationFailed, match="exceeds 32KB limit") as refused:
        single(path, message_of(limits.MAX_MESSAGE_BYTES + 1))
    assert refused.value.status == 413
    assert stored(path) == ([], 0)  # not even quarantined: it was never decoded
