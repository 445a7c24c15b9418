"""One suite for every log behind the seam (`trackd.log.protocol`): the SQLite shards and NATS
JetStream (the machine's server on 127.0.0.1:4222; each test makes and deletes its own stream).

What a stage may rely on is asserted on both; what only one log gives is marked so.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.log.natsd import MACHINE_NATS, delete_stream, machine_nats_up, unique_stream
from trackd.log import shard
from trackd.log.jetstream import JetStreamLog
from trackd.log.protocol import LogProducer, LogSource, PositionedConsumer
from trackd.log.reader import LogReader
from trackd.log.records import Entry, Record, Refused
from trackd.log.sqlite import SqliteLog, SqliteProducer
from trackd.log.writer import LogWriter
from trackd.settings import LogSettings

T = TypeVar("T")
ACK_WAIT = 1.0  # NATS: seconds before an unacknowledged record comes again


def entry(message_id: str, source: str = "web") -> Entry:
    return Entry(source, message_id, "track", "2024-05-01T12:00:00.000Z",
                 b'{"messageId":"%s"}' % message_id.encode())


def refused(message_id: str | None, reason: str = "Missing: event") -> Refused:
    return Refused("web", message_id, "2024-05-01T12:00:00.000Z", 2, reason, b'{"type":"x"}')


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
    """Await `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


@dataclass
class Log:
    producer: LogProducer
    source: LogSource
    kind: str


Opener = Callable[[], contextlib.AbstractAsyncContextManager[Log]]


@pytest.fixture(params=["sqlite", "nats"])
def open_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    if request.param == "nats" and not machine_nats_up():
        pytest.skip("no NATS server on 127.0.0.1:4222")
    stream = unique_stream()

    @contextlib.asynccontextmanager
    async def sqlite() -> AsyncIterator[Log]:
        reader = LogReader(tmp_path / "log")
        producer = SqliteProducer(LogWriter(shard.shard_path(tmp_path / "log", "gw0"),
                                            max_pending_bytes=1 << 20))
        await producer.start()
        source = SqliteLog(reader)
        try:
            yield Log(producer, source, "sqlite")
        finally:
            await producer.close()
            await source.close()

    @contextlib.asynccontextmanager
    async def nats() -> AsyncIterator[Log]:
        log = JetStreamLog(LogSettings(url=MACHINE_NATS, stream=stream, ack_wait_s=ACK_WAIT))
        await log.start()
        assert log.healthy, log.last_error
        try:
            yield Log(log, log, "nats")
        finally:
            await log.close()

    yield sqlite if request.param == "sqlite" else nats
    if request.param == "nats":
        delete_stream(stream)


def run(body: Callable[[], Coroutine[Any, Any, None]], timeout: float = 60) -> None:
    asyncio.run(asyncio.wait_for(body(), timeout))


def ids(records: list[Record]) -> list[str]:
    return [r.message_id for r in records]


async def read_all(consumer: Any, expected: int, timeout: float = 20.0) -> list[Record]:
    """Read until `expected` records came (NATS may hand them out over several fetches)."""
    out: list[Record] = []

    async def more() -> bool:
        out.extend(await consumer.read(expected - len(out), wait=0.2))
        return len(out) >= expected

    await eventually(more, timeout)
    return out


def test_append_then_read_in_order_with_every_field(open_log: Opener) -> None:
    async def body() -> None:
        async with open_log() as log:
            consumer = await log.source.consumer("warehouse")
            await log.producer.append([entry(f"m{i}") for i in range(5)], [refused("bad")])
            records = await read_all(consumer, 5)
            assert ids(records) == [f"m{i}" for i in range(5)]
            first = records[0]
            assert (first.source, first.type, first.received_at, first.body) == (
                "web", "track", "2024-05-01T12:00:00.000Z", b'{"messageId":"m0"}')
            assert [r.offset for r in records] == sorted(r.offset for r in records)
            assert await consumer.read(10) == []  # the refused message is not a record
    run(body)


def test_acknowledged_records_are_not_read_again_by_a_new_handle(open_log: Opener) -> None:
    async def body() -> None:
        async with open_log() as log:
            consumer = await log.source.consumer("archive")
            await log.producer.append([entry(f"m{i}") for i in range(5)])
            records = await read_all(consumer, 5)
            await consumer.ack(records)
            await consumer.close()
            again = await log.source.consumer("archive")
            await log.producer.append([entry("m5")])
            fresh = await read_all(again, 1)
            assert ids(fresh) == ["m5"]
            await again.ack(fresh)
            if log.kind == "nats":
                await asyncio.sleep(ACK_WAIT * 1.5)  # past the redelivery time: still nothing
            assert await again.read(10) == []
    run(body)


def test_records_read_and_not_acknowledged_come_again_after_a_crash(open_log: Opener) -> None:
    async def body() -> None:
        async with open_log() as log:
            consumer = await log.source.consumer("warehouse")
            await log.producer.append([entry(f"m{i}") for i in range(4)])
            records = await read_all(consumer, 4)
            await consumer.ack(records[:1])
            await consumer.close()  # the process died before acknowledging the rest
            again = await log.source.consumer("warehouse")
            assert sorted(ids(await read_all(again, 3))) == ["m1", "m2", "m3"]
    run(body)


def test_retry_gives_records_again(open_log: Opener) -> None:
    async def body() -> None:
        async with open_log() as log:
            consumer = await log.source.consumer("destination:web")
            await log.producer.append([entry("m0"), entry("m1")])
            records = await read_all(consumer, 2)
            await consumer.retry(records, delay=0.3)
            again = await read_all(consumer, 2)
            assert sorted(ids(again)) == ["m0", "m1"]
            await consumer.ack(again)
            assert await log.source.lag("destination:web") == 0
    run(body)


def test_lag_counts_what_a_consumer_has_not_acknowledged(open_log: Opener) -> None:
    async def body() -> None:
        async with open_log() as log:
            consumer = await log.source.consumer("warehouse")
            assert await log.source.lag("warehouse") == 0
            await log.producer.append([entry(f"m{i}") for i in range(5)], [refused("bad")])
            assert await eventually(lambda: _equals(log.source.lag("warehouse"), 5))
            records = await read_all(consumer, 5)
            await consumer.ack(records[:2])
            assert await log.source.lag("warehouse") == 3
            await consumer.ack(records[2:])
            assert await log.source.lag("warehouse") == 0
            assert await log.source.lag("never-seen") == 0
    run(body)


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


def test_a_new_consumer_may_start_at_the_end(open_log: Opener) -> None:
    async def body() -> None:
        async with open_log() as log:
            await log.producer.append([entry("old")])
            consumer = await log.source.consumer("destination:new", start="new")
            await log.producer.append([entry("fresh")])
            assert ids(await read_all(consumer, 1)) == ["fresh"]
            assert await consumer.read(10) == []
            assert await log.source.consumers() == ["destination:new"]
            await log.source.unregister("destination:new")
            assert await log.source.consumers() == []
    run(body)


def test_find_by_message_id_and_the_quarantine(open_log: Opener) -> None:
    async def body() -> None:
        async with open_log() as log:
            await log.producer.append([entry(f"m{i}") for i in range(20)] + [entry("m3", "app")],
                                      [refused("bad-1", "Missing: event")])
            await log.producer.append([], [refused("bad-2", "Too large"), refused(None)])
            found = await log.source.find("m3")
            assert sorted(r.source for r in found) == ["app", "web"]
            assert [r.body for r in await log.source.find("m3", "app")] == [
                b'{"messageId":"m3"}']
            assert await log.source.find("nope") == []
            newest = await log.source.quarantined()
            assert [q["messageId"] for q in newest] == [None, "bad-2", "bad-1"]
            [bad] = await log.source.quarantined(message_id="bad-1")
            assert (bad["reason"], bad["batchIndex"], bad["source"], bad["body"]) == (
                "Missing: event", 2, "web", '{"type":"x"}')
            assert [q["messageId"] for q in await log.source.quarantined(limit=1)] == [None]
    run(body)


def test_trim_drops_what_every_consumer_acknowledged(open_log: Opener) -> None:
    async def body() -> None:
        async with open_log() as log:
            first = await log.source.consumer("warehouse")
            second = await log.source.consumer("archive")
            await log.producer.append([entry(f"m{i}") for i in range(3)], [refused("bad")])
            await first.ack(await read_all(first, 3))
            assert await log.source.trim() == 0  # `archive` has not acknowledged yet
            await second.ack(await read_all(second, 3))
            assert await log.source.trim() == 3
            assert await log.source.find("m1") == []
            assert len(await log.source.quarantined()) == 1  # the quarantine is kept
    run(body)


def test_the_sqlite_consumer_keeps_a_position_a_stage_can_store(open_log: Opener) -> None:
    async def body() -> None:
        async with open_log() as log:
            consumer = await log.source.consumer("warehouse")
            if log.kind != "sqlite":
                assert not isinstance(consumer, PositionedConsumer)
                return
            assert isinstance(consumer, PositionedConsumer)
            await log.producer.append([entry(f"m{i}") for i in range(4)])
            records = await consumer.read(10)
            stored = {records[1].shard: records[1].offset}  # e.g. kept in the warehouse
            again = await log.source.consumer("warehouse")
            assert isinstance(again, PositionedConsumer)
            await again.seek(stored)
            assert ids(await again.read(10)) == ["m2", "m3"]
            assert await again.position() == stored
    run(body)


def test_any_message_id_comes_back_as_sent(open_log: Opener) -> None:
    """messageIds are the sender's: spaces, CR/LF, %, non-ASCII, a header-like text."""
    odd = [" edge ", "a\r\nNats-Msg-Id: b", "100%25", "ü-✓", "tab\there", "x" * 300]

    async def body() -> None:
        async with open_log() as log:
            consumer = await log.source.consumer("warehouse")
            await log.producer.append([entry(mid) for mid in odd])
            assert ids(await read_all(consumer, len(odd))) == odd
            for mid in odd:
                assert ids(await log.source.find(mid)) == [mid]
            await log.producer.append([entry(odd[1])])  # NATS: the same id, stored once
            more = await consumer.read(10, wait=0.3)
            assert ids(more) == ([] if log.kind == "nats" else [odd[1]])
    run(body)
