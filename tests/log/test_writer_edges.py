"""The log writer at its edges: the back-pressure bound to the byte, and a close that returns
only once what was queued is committed (found by mutation testing: see docs/testing.md)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.log.test_log import entry, open_writer
from trackd.errors import LogFull
from trackd.log import shard
from trackd.log.reader import LogReader


@pytest.fixture
def path(tmp_path: Path) -> Path:
    (tmp_path / "log").mkdir()
    return shard.shard_path(tmp_path / "log", "gw0")


@contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Hold the shard's write lock (what a commit needs) for the block."""
    holder = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def stored(path: Path) -> list[str]:
    reader = LogReader(path.parent)
    try:
        return [r.message_id for r in reader.read("c")]
    finally:
        reader.close()


def test_the_bound_counts_the_waiting_bytes_plus_the_new_request(path: Path) -> None:
    # 60 bytes wait for the disk under a bound of 100: another 60 is refused (120 > 100),
    # 40 fits exactly (100), and once the disk is back every accepted message is stored.
    async def run() -> None:
        writer = await open_writer(path, max_pending_bytes=100)
        await writer.append([entry("warm")])  # the shard's first commit
        with write_locked(path):
            first = asyncio.ensure_future(writer.append([entry("a", body=b"a" * 60)]))
            await asyncio.sleep(0)
            assert writer.pending_bytes == 60
            with pytest.raises(LogFull, match="too many messages waiting"):
                await writer.append([entry("over", body=b"o" * 60)])
            fits = asyncio.ensure_future(writer.append([entry("fits", body=b"f" * 40)]))
            await asyncio.sleep(0)
            assert writer.pending_bytes == 100
            assert not first.done() and not fits.done()
            with pytest.raises(LogFull):
                await writer.append([entry("one-more", body=b"x")])
        await asyncio.gather(first, fits)
        assert writer.pending_bytes == 0
        await asyncio.to_thread(writer.close)

    asyncio.run(run())
    assert stored(path) == ["warm", "a", "fits"]


def test_close_returns_only_once_the_queued_messages_are_committed(path: Path) -> None:
    async def run() -> None:
        writer = await open_writer(path)
        await writer.append([entry("warm")])
        with write_locked(path):
            queued = asyncio.ensure_future(writer.append([entry("queued")]))
            await asyncio.sleep(0)
            closer = threading.Thread(target=writer.close)
            closer.start()
            closer.join(0.5)
            # The commit cannot complete while the lock is held: neither can close.
            assert closer.is_alive()
        await asyncio.to_thread(closer.join, 60)
        assert not closer.is_alive()
        assert stored(path) == ["warm", "queued"]  # before the loop hears of it
        await queued

    asyncio.run(run())
