"""The durable log's interface: append (group commit), read as a named consumer, commit, trim."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from trackd.errors import LogClosed, LogFull, LogWriteFailed
from trackd.log import shard
from trackd.log.reader import LogReader
from trackd.log.records import Entry, Refused, Violation
from trackd.log.writer import LogWriter


def entry(message_id: str, source: str = "web", body: bytes | None = None) -> Entry:
    return Entry(source, message_id, "track", "2024-05-01T12:00:00.000Z",
                 body if body is not None else b'{"messageId":"%s"}' % message_id.encode())


def refused(message_id: str | None, index: int | None = 0) -> Refused:
    return Refused("web", message_id, "2024-05-01T12:00:00.000Z", index, "Missing: x", b"{}")


async def open_writer(path: Path, **kw: Any) -> LogWriter:
    writer = LogWriter(path, max_pending_bytes=kw.pop("max_pending_bytes", 1 << 20), **kw)
    writer.start(asyncio.get_running_loop())
    return writer


def write(log_dir: Path, name: str, batches: list[list[Entry]]) -> None:
    async def run() -> None:
        writer = await open_writer(shard.shard_path(log_dir, name))
        for batch in batches:
            await writer.append(batch)
        await asyncio.to_thread(writer.close)

    log_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(run())


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    path = tmp_path / "log"
    path.mkdir()
    return path


def test_an_append_is_readable_when_it_returns(log_dir: Path) -> None:
    reader = LogReader(log_dir)

    async def run() -> None:
        writer = await open_writer(shard.shard_path(log_dir, "gw0"))
        await writer.append([entry("a"), entry("b")], [refused("bad", 3)])
        # another connection (another process in production) sees it at once
        assert [r.message_id for r in reader.read("c")] == ["a", "b"]
        assert [(q["messageId"], q["batchIndex"]) for q in reader.quarantined()] == [("bad", 3)]
        await asyncio.to_thread(writer.close)

    asyncio.run(run())
    [record] = reader.find("b")
    assert (record.shard, record.offset, record.source, record.type) == ("gw0", 2, "web",
                                                                         "track")
    assert record.body == b'{"messageId":"b"}'
    reader.close()


def test_concurrent_appends_share_commits(log_dir: Path) -> None:
    commits: list[int] = []

    async def run() -> None:
        writer = await open_writer(shard.shard_path(log_dir, "gw0"),
                                   on_commit=lambda seconds, n: commits.append(n))
        await asyncio.gather(*(writer.append([entry(f"m{i}")]) for i in range(500)))
        await asyncio.to_thread(writer.close)

    asyncio.run(run())
    assert sum(commits) == 500
    assert len(commits) < 100, f"{len(commits)} commits for 500 concurrent appends"
    reader = LogReader(log_dir)
    assert [r.message_id for r in reader.read("c", limit=1000)] == [f"m{i}" for i in range(500)]
    reader.close()


def test_back_pressure_log_full_then_closed(log_dir: Path) -> None:
    async def run() -> None:
        writer = await open_writer(shard.shard_path(log_dir, "gw0"), max_pending_bytes=100)
        big = entry("big", body=b"x" * 500)  # larger than the bound, alone: accepted
        first = asyncio.ensure_future(writer.append([big]))
        await asyncio.sleep(0)
        assert writer.pending_bytes == 500
        with pytest.raises(LogFull):
            await writer.append([entry("refused")])
        await first
        assert writer.pending_bytes == 0
        await writer.append([entry("ok")])
        queued = asyncio.ensure_future(writer.append([entry("queued")]))
        await asyncio.sleep(0)
        await asyncio.to_thread(writer.close)  # commits what is queued, then stops
        await queued
        assert not writer.healthy
        with pytest.raises(LogClosed):
            await writer.append([entry("late")])

    asyncio.run(run())
    reader = LogReader(log_dir)
    assert [r.message_id for r in reader.read("c")] == ["big", "ok", "queued"]
    reader.close()


def test_a_failed_commit_stores_nothing_of_its_group_and_the_writer_recovers(
        log_dir: Path) -> None:
    outcome: list[object] = []

    async def run() -> None:
        writer = await open_writer(shard.shard_path(log_dir, "gw0"))
        broken = Entry(None, "broken", "track", "2024-05-01T12:00:00.000Z",  # type: ignore[arg-type]
                       b"{}")  # NOT NULL source: the commit fails
        outcome.extend(await asyncio.gather(writer.append([entry("maybe-same-group")]),
                                            writer.append([broken]), return_exceptions=True))
        assert isinstance(outcome[1], LogWriteFailed)
        assert not writer.healthy and writer.last_error
        await writer.append([entry("after")])
        assert writer.healthy
        await asyncio.to_thread(writer.close)

    asyncio.run(run())
    reader = LogReader(log_dir)
    expected = ["after"] if isinstance(outcome[0], LogWriteFailed) else ["maybe-same-group",
                                                                        "after"]
    assert [r.message_id for r in reader.read("c")] == expected
    reader.close()


def test_consumers_read_after_their_committed_position(log_dir: Path) -> None:
    write(log_dir, "gw0", [[entry(f"a{i}") for i in range(5)]])
    write(log_dir, "gw1", [[entry(f"b{i}") for i in range(3)]])
    reader = LogReader(log_dir)
    assert reader.shards() == ["gw0", "gw1"]
    first = reader.read("warehouse", limit=4)
    assert [r.message_id for r in first] == ["a0", "a1", "a2", "a3"]
    assert reader.read("warehouse", limit=4) == first  # nothing committed yet
    reader.commit("warehouse", first)
    assert reader.position("warehouse") == {"gw0": 4}
    rest = reader.read("warehouse")
    assert [(r.shard, r.message_id) for r in rest] == [
        ("gw0", "a4"), ("gw1", "b0"), ("gw1", "b1"), ("gw1", "b2")]
    reader.commit("warehouse", rest)
    assert reader.read("warehouse") == []
    assert reader.lag("warehouse") == 0
    assert reader.lag("archive") == 8
    # an explicit position reads without touching the committed one
    assert [r.message_id for r in reader.read("x", position={"gw0": 5, "gw1": 2})] == ["b2"]
    reader.close()

    again = LogReader(log_dir)  # positions are durable
    assert again.position("warehouse") == {"gw0": 5, "gw1": 3}
    assert again.read("warehouse") == []
    assert again.heads() == {"gw0": 5, "gw1": 3}
    again.close()


def test_commit_never_moves_a_position_backwards(log_dir: Path) -> None:
    write(log_dir, "gw0", [[entry(f"a{i}") for i in range(5)]])
    reader = LogReader(log_dir)
    records = reader.read("c")
    reader.commit("c", records[:4])
    reader.commit("c", records[:2])
    assert reader.position("c") == {"gw0": 4}
    reader.close()


def test_trim_deletes_only_what_every_consumer_has_passed(log_dir: Path) -> None:
    # three requests of two messages: three frames, offsets 1-2, 3-4, 5-6
    write(log_dir, "gw0", [[entry(f"a{i}"), entry(f"a{i + 1}")] for i in range(0, 6, 2)])
    reader = LogReader(log_dir)
    reader.register("warehouse")
    reader.register("archive")
    reader.commit("warehouse", {"gw0": 5})
    assert reader.trim() == 0  # archive has read nothing
    reader.commit("archive", {"gw0": 3})  # inside the second frame: it stays whole
    assert reader.trim() == 2
    assert [r.message_id for r in reader.read("new", limit=100)] == ["a2", "a3", "a4", "a5"]
    assert [r.message_id for r in reader.read("archive")] == ["a3", "a4", "a5"]
    assert [r.offset for r in reader.read("archive")] == [4, 5, 6]
    assert [r.message_id for r in reader.read("warehouse")] == ["a5"]
    assert reader.find("a0") == []
    reader.close()


def violation(message_id: str | None, at: str) -> Violation:
    return Violation("web", message_id, at, "track", "Played", "type_mismatch", "properties.n",
                     "type", "not a number", 1, "flag")


def write_with_violations(log_dir: Path) -> None:
    """Three requests at 12:00, 12:01, 12:02, each one message with a violation, and a
    blocked message (refused, with its violation) at 12:01."""

    async def run() -> None:
        writer = await open_writer(shard.shard_path(log_dir, "gw0"))
        for minute in range(3):
            at = f"2024-05-01T12:0{minute}:00.000Z"
            await writer.append([Entry("web", f"m{minute}", "track", at, b"{}")], (),
                                [violation(f"m{minute}", at)])
            if minute == 1:
                await writer.append([], [Refused("web", "blocked", at, None,
                                                 "tracking plan: type_mismatch at properties.n",
                                                 b"{}")], [violation("blocked", at)])
        await asyncio.to_thread(writer.close)

    asyncio.run(run())


def kept_violations(reader: LogReader) -> list[str]:
    return [row[4] for row in reader.read_violations({})]


def test_violations_are_trimmed_with_the_messages_of_their_time(log_dir: Path) -> None:
    write_with_violations(log_dir)
    reader = LogReader(log_dir)
    reader.register("archive")
    assert kept_violations(reader) == ["m0", "m1", "blocked", "m2"]
    reader.commit("archive", {"gw0": 2})  # past m0 and m1: the frame of m2 (12:02) stays
    assert reader.trim() == 2
    assert kept_violations(reader) == ["m2"]
    reader.commit("archive", {"gw0": 3})
    assert reader.trim() == 1
    assert kept_violations(reader) == []
    reader.close()


def test_violations_wait_for_the_warehouse_to_load_them(log_dir: Path) -> None:
    write_with_violations(log_dir)
    reader = LogReader(log_dir)
    reader.register("warehouse")
    reader.commit_violations("warehouse", {})  # it loads violations, none loaded yet
    reader.commit("warehouse", {"gw0": 3})
    assert reader.trim() == 3
    assert kept_violations(reader) == ["m0", "m1", "blocked", "m2"]
    reader.commit_violations("warehouse", {"gw0": 2})  # loaded those of m0 and m1
    reader.trim()
    assert kept_violations(reader) == ["blocked", "m2"]
    reader.commit_violations("warehouse", {"gw0": 4})
    reader.trim()
    assert kept_violations(reader) == []
    reader.unregister("warehouse")  # and its violation position with it
    assert reader.violations_loaded(["warehouse"]) is None
    reader.close()


def test_reads_stop_inside_a_frame_and_resume_there(log_dir: Path) -> None:
    write(log_dir, "gw0", [[entry(f"a{i}") for i in range(5)], [entry("b0"), entry("b1")]])
    reader = LogReader(log_dir)
    try:
        first = reader.read("c", limit=3)
        assert [(r.offset, r.message_id) for r in first] == [(1, "a0"), (2, "a1"), (3, "a2")]
        reader.commit("c", first)
        rest = reader.read("c", limit=3)
        assert [(r.offset, r.message_id) for r in rest] == [(4, "a3"), (5, "a4"), (6, "b0")]
        assert [r.body for r in rest] == [b'{"messageId":"a3"}', b'{"messageId":"a4"}',
                                          b'{"messageId":"b0"}']
        assert reader.heads() == {"gw0": 7}
        assert reader.lag("c") == 4
    finally:
        reader.close()


def test_find_matches_the_exact_message_id_only(log_dir: Path) -> None:
    tricky = 'x"a'  # its JSON text, "x\"a", holds "a" too
    write(log_dir, "gw0", [[entry("a"), entry(tricky), entry("ab")], [entry("a", source="app")]])
    reader = LogReader(log_dir)
    try:
        assert [(r.offset, r.source) for r in reader.find("a")] == [(1, "web"), (4, "app")]
        assert [r.offset for r in reader.find("a", source="app")] == [4]
        assert [r.message_id for r in reader.find(tricky)] == [tricky]
        assert reader.find("b") == []
    finally:
        reader.close()


def test_find_reaches_every_message_of_a_large_frame(log_dir: Path) -> None:
    write(log_dir, "gw0", [[entry(f"m{i}") for i in range(300)]])
    reader = LogReader(log_dir)
    try:
        assert [(r.offset, r.body) for r in reader.find("m299")] == [
            (300, b'{"messageId":"m299"}')]
    finally:
        reader.close()


def test_the_quarantine_is_filtered_by_source_and_message_id(log_dir: Path) -> None:
    async def run() -> None:
        writer = await open_writer(shard.shard_path(log_dir, "gw0"))
        await writer.append([], [refused("q1", 0), refused(None, None),
                                 Refused("app", "q2", "2024-05-01T12:00:01.000Z", 7, "why",
                                         b'{"a":1}')])
        await asyncio.to_thread(writer.close)

    asyncio.run(run())
    reader = LogReader(log_dir)
    assert len(reader.quarantined()) == 3
    [q2] = reader.quarantined(source="app")
    assert (q2["messageId"], q2["batchIndex"], q2["reason"], q2["body"]) == ("q2", 7, "why",
                                                                             '{"a":1}')
    assert [q["messageId"] for q in reader.quarantined(message_id="q1")] == ["q1"]
    assert reader.quarantined()[0]["messageId"] == "q2"  # newest first
    reader.close()


def test_shards_are_written_in_wal_mode_with_synchronous_full(log_dir: Path) -> None:
    """COMMIT returns only after fsync: what lets a 200 survive power loss, not just kill -9."""
    conn = shard.connect(shard.shard_path(log_dir, "gw0"), write=True)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA page_size").fetchone()[0] == shard.PAGE_SIZE
    finally:
        conn.close()


def test_many_frames_and_an_oversized_request_are_stored_whole_and_in_order(
        log_dir: Path) -> None:
    """600 concurrent requests go in as multi-row INSERTs (256, 256, 64, ...) of one commit or
    a few; a request of 5,000 messages is split in frames of at most 4,096."""
    ids = [f"m{i}" for i in range(600)]
    big = [f"big{i}" for i in range(5000)]

    async def run() -> None:
        writer = await open_writer(shard.shard_path(log_dir, "gw0"), max_pending_bytes=1 << 30)
        await asyncio.gather(*(writer.append([entry(i)]) for i in ids))
        await writer.append([entry(i) for i in big])
        await asyncio.to_thread(writer.close)

    asyncio.run(run())
    reader = LogReader(log_dir)
    try:
        records = list(reader.read("c", limit=10_000))
        frames = reader._conn("gw0").execute("SELECT count FROM frames WHERE count > 1")
        assert [n for (n,) in frames] == [4096, 904]
    finally:
        reader.close()
    assert [r.message_id for r in records] == [*ids, *big]
    assert [r.offset for r in records] == list(range(1, 5601))
    assert records[7].body == b'{"messageId":"m7"}'
    assert (records[7].source, records[7].type) == ("web", "track")
    assert records[7].received_at == "2024-05-01T12:00:00.000Z"
