"""The log writer at its edges: the back-pressure bound to the byte, and a close that returns
only once what was queued is committed (found by mutation testing: see docs/testing.md)."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.log.test_log import entry, open_writer, refused
from trackd.errors import LogFull, LogWriteFailed
from trackd.log import shard
from trackd.log.reader import LogReader
from trackd.log.records import Entry, Violation


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


def test_refused_bodies_count_too_and_one_waiting_byte_is_enough_to_refuse(path: Path) -> None:
    async def run() -> None:
        writer = await open_writer(path, max_pending_bytes=100)
        await writer.append([entry("warm")])
        with write_locked(path):
            quarantined = dataclasses.replace(refused("q"), body=b"q" * 60)
            first = asyncio.ensure_future(writer.append([], [quarantined]))
            await asyncio.sleep(0)
            assert writer.pending_bytes == 60
            with pytest.raises(LogFull):
                await writer.append([entry("over", body=b"o" * 60)])
        await first
        with write_locked(path):
            one = asyncio.ensure_future(writer.append([entry("one", body=b"1")]))
            await asyncio.sleep(0)
            assert writer.pending_bytes == 1
            with pytest.raises(LogFull):
                await writer.append([entry("big", body=b"b" * 200)])
        await one
        await asyncio.to_thread(writer.close)

    asyncio.run(run())
    assert stored(path) == ["warm", "one"]


def test_violations_alone_are_stored_with_their_message(path: Path) -> None:
    violation = Violation("web", "v1", "2024-05-01T12:00:00.000Z", "track", "Clicked",
                          "unplanned_property", "properties.x", "additionalProperties",
                          "not in the plan", 3, "allow")

    async def run() -> None:
        writer = await open_writer(path)
        await writer.append([entry("v1")], violations=[violation])
        await asyncio.to_thread(writer.close)

    asyncio.run(run())
    reader = LogReader(path.parent)
    try:
        [row] = reader.read_violations({})
    finally:
        reader.close()
    assert row[0] == "gw0" and "v1" in row and "properties.x" in row and "allow" in row
    assert stored(path) == ["v1"]


def test_a_new_writer_is_healthy_and_closing_twice_is_harmless(path: Path) -> None:
    async def run() -> None:
        writer = await open_writer(path)
        assert writer.healthy  # before its first commit: /readyz must not wait for traffic
        await asyncio.to_thread(writer.close)
        await asyncio.to_thread(writer.close)
        assert not writer.healthy

    asyncio.run(run())


def test_close_returns_only_once_the_queued_messages_are_committed(path: Path) -> None:
    async def run() -> None:
        writer = await open_writer(path)
        await writer.append([entry("warm")])
        with write_locked(path):
            # Two requests wait behind the lock; the close's own marker queues after them.
            queued = [asyncio.ensure_future(writer.append([entry("q1")]))]
            await asyncio.sleep(0.2)  # the writer takes q1 alone (else the mutant can hide)
            queued.append(asyncio.ensure_future(writer.append([entry("q2")])))
            await asyncio.sleep(0)
            closer = threading.Thread(target=writer.close, daemon=True)
            closer.start()
            closer.join(0.5)
            # The commit cannot complete while the lock is held: neither can close.
            assert closer.is_alive()
        await asyncio.to_thread(closer.join, 30)
        assert not closer.is_alive(), "close never returned"
        assert stored(path) == ["warm", "q1", "q2"]  # before the loop hears of it
        await asyncio.gather(*queued)

    asyncio.run(run())


def test_a_failed_commit_with_refused_messages_is_rolled_back_and_the_next_one_commits(
        path: Path) -> None:
    async def run() -> None:
        writer = await open_writer(path)
        broken = Entry(None, "broken", "track", "2024-05-01T12:00:00.000Z",  # type: ignore[arg-type]
                       b"{}")  # NOT NULL source: fails inside BEGIN ... COMMIT
        with pytest.raises(LogWriteFailed):
            await writer.append([broken], [refused("q")])
        assert not writer.healthy
        await writer.append([entry("after")], [refused("q2")])
        assert writer.healthy
        await asyncio.to_thread(writer.close)

    asyncio.run(run())
    assert stored(path) == ["after"]


def test_the_commit_observer_gets_the_seconds_and_every_record_refused_ones_included(
        path: Path) -> None:
    commits: list[tuple[float, int]] = []

    async def run() -> None:
        writer = await open_writer(path, on_commit=lambda s, n: commits.append((s, n)))
        await writer.append([entry("a"), entry("b")], [refused("q")])
        await asyncio.to_thread(writer.close)

    asyncio.run(run())
    [(seconds, records)] = commits
    assert records == 3
    assert 0 <= seconds < 60  # a commit's own time, not a clock reading


def test_a_cancelled_request_does_not_leave_the_others_of_its_commit_waiting(
        path: Path) -> None:
    async def run() -> None:
        writer = await open_writer(path)
        await writer.append([entry("warm")])
        with write_locked(path):
            # The writer waits on the lock with "blocker"; the next four form one commit.
            blocker = asyncio.ensure_future(writer.append([entry("blocker")]))
            await asyncio.sleep(0.2)
            first = asyncio.ensure_future(writer.append([entry("gone")]))
            others = [asyncio.ensure_future(writer.append([entry(f"o{i}")])) for i in range(3)]
            await asyncio.sleep(0)
            first.cancel()  # the client went away; its messages are still committed
        await asyncio.wait_for(asyncio.gather(blocker, *others), 30)
        await asyncio.to_thread(writer.close)

    asyncio.run(run())
    assert stored(path) == ["warm", "blocker", "gone", "o0", "o1", "o2"]


def test_one_request_of_two_sources_keeps_each_message_s_source(path: Path) -> None:
    async def run() -> None:
        writer = await open_writer(path)
        await writer.append([entry("w1"), entry("b1", source="backend"), entry("w2")])
        await asyncio.to_thread(writer.close)

    asyncio.run(run())
    reader = LogReader(path.parent)
    try:
        assert [(r.message_id, r.source) for r in reader.read("c")] == [
            ("w1", "web"), ("b1", "backend"), ("w2", "web")]
    finally:
        reader.close()
