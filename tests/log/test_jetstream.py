"""What only the NATS log does: shared consumers, dedup by Nats-Msg-Id, back-pressure and faults.

Plain cases use the machine's server (own stream per test); faults use servers this module
starts from the `nats-server` binary on free loopback ports.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from tests.log.natsd import (
    MACHINE_NATS,
    Cluster,
    NatsNode,
    delete_stream,
    free_port,
    machine_nats_up,
    nats_binary,
    unique_stream,
)
from tests.log.test_conformance import entry, eventually, ids, read_all, run
from trackd.errors import LogError, LogFull, LogUnavailable
from trackd.log.jetstream import JetStreamLog
from trackd.log.jetstream_consumer import JetStreamConsumer, consumer_name, durable_name
from trackd.log.jetstream_lookup import scan
from trackd.log.records import Entry, Record
from trackd.settings import LogSettings

needs_machine_nats = pytest.mark.skipif(not machine_nats_up(),
                                        reason="no NATS server on 127.0.0.1:4222")
needs_binary = pytest.mark.skipif(nats_binary() is None, reason="nats-server not installed")


@pytest.fixture
def stream() -> Iterator[str]:
    name = unique_stream()
    yield name
    if machine_nats_up():
        delete_stream(name)


def test_consumer_names_map_to_durable_names_and_back() -> None:
    for name in ("warehouse", "destination:web hook", "destination:ü.*>", "a_b"):
        durable = durable_name(name)
        assert not set(durable) & set(".*> :")
        assert consumer_name(durable) == name


@needs_machine_nats
def test_two_processes_of_one_consumer_share_the_work_without_duplicates(stream: str) -> None:
    async def body() -> None:
        settings = LogSettings(url=MACHINE_NATS, stream=stream, ack_wait_s=5.0)
        first, second = JetStreamLog(settings), JetStreamLog(settings)  # two connections
        await first.start()
        await second.start()
        try:
            a = await first.consumer("warehouse")
            b = await second.consumer("warehouse")
            await first.append([entry(f"m{i}") for i in range(200)])
            got: dict[str, list[Record]] = {"a": [], "b": []}

            async def both() -> bool:
                got["a"] += await a.read(25, wait=0.1)
                got["b"] += await b.read(25, wait=0.1)
                return len(got["a"]) + len(got["b"]) >= 200

            await eventually(both)
            assert got["a"] and got["b"]
            everything = ids(got["a"]) + ids(got["b"])
            assert sorted(everything) == sorted(f"m{i}" for i in range(200))  # none twice
            await a.ack(got["a"])
            await b.ack(got["b"])
            assert await first.lag("warehouse") == 0
        finally:
            await first.close()
            await second.close()
    run(body)


@needs_machine_nats
def test_held_records_wait_for_their_holder_while_it_lives_and_then_go_to_another(
        stream: str) -> None:
    """`extend` holds records past ack_wait (a destination waiting to deliver them); when the
    holder goes away without acknowledging, another process of the consumer gets them."""
    async def body() -> None:
        settings = LogSettings(url=MACHINE_NATS, stream=stream, ack_wait_s=1.0)
        first, second = JetStreamLog(settings), JetStreamLog(settings)
        await first.start()
        await second.start()
        try:
            holder = await first.consumer("destination:hook")
            other = await second.consumer("destination:hook")
            await first.append([entry(f"m{i}") for i in range(5)])
            held: list[Record] = []

            async def all_read() -> bool:
                held.extend(await holder.read(10, wait=0.1))
                return len(held) == 5

            await eventually(all_read)
            await holder.extend(held)
            # three times ack_wait: none comes to the other process while the holder lives
            assert await other.read(10, wait=3.0) == []
            await holder.close()  # as if its process died: never acknowledged
            again: list[Record] = []

            async def redelivered() -> bool:
                again.extend(await other.read(10, wait=0.2))
                return len(again) >= 5

            await eventually(redelivered)
            assert sorted(ids(again)) == [f"m{i}" for i in range(5)]
            await other.ack(again)
            assert await second.lag("destination:hook") == 0
        finally:
            await first.close()
            await second.close()
    run(body)


@needs_binary
def test_a_new_consumer_created_late_starts_when_it_was_first_asked_for(
        tmp_path: Path) -> None:
    """A destination's consumer starts at "new"; if NATS answers the pipeline process only
    after gateways stored messages, those messages still reach the destination."""
    async def body() -> None:
        node = NatsNode(tmp_path, "late")
        settings = LogSettings(url=node.url, stream="late")
        pipeline = JetStreamLog(settings, reconnect_wait=0.1)
        await pipeline.start()  # NATS not there: keeps trying
        with pytest.raises(LogUnavailable):
            await pipeline.consumer("destination:late", start="new")
        node.start()
        gateway = JetStreamLog(settings)
        try:
            await gateway.start()
            await gateway.append([entry(f"m{i}") for i in range(3)])
            await eventually(lambda: _true(pipeline.healthy))
            consumer = await pipeline.consumer("destination:late", start="new")
            got = await read_all(consumer, 3)
            assert sorted(ids(got)) == ["m0", "m1", "m2"]
        finally:
            await pipeline.close()
            await gateway.close()
            node.kill()
    run(body)


async def _true(value: bool) -> bool:
    return value


@needs_machine_nats
def test_a_retried_request_within_the_duplicate_window_is_stored_once(stream: str) -> None:
    async def body() -> None:
        log = JetStreamLog(LogSettings(url=MACHINE_NATS, stream=stream))
        await log.start()
        try:
            consumer = await log.consumer("warehouse")
            batch = [entry(f"m{i}") for i in range(5)]
            await log.append(batch)
            await log.append(batch + [entry("m5")])  # the client retried, with one more
            await log.append([entry("m0", "app")])  # same id, other source: another message
            records = await read_all(consumer, 7)
            assert sorted((r.source, r.message_id) for r in records) == sorted(
                [("web", f"m{i}") for i in range(6)] + [("app", "m0")])
            assert await consumer.read(10, wait=0.3) == []
        finally:
            await log.close()
    run(body)


@needs_machine_nats
def test_a_restart_with_other_settings_updates_the_stream(stream: str) -> None:
    async def body() -> None:
        for window in (120.0, 30.0):
            log = JetStreamLog(LogSettings(url=MACHINE_NATS, stream=stream,
                                           duplicate_window_s=window))
            await log.start()
            assert log._js is not None
            info = await log._js.stream_info(stream)
            await log.close()
            assert info.config.duplicate_window == window
            assert info.config.subjects == [f"{stream}.m.>", f"{stream}.q.>", f"{stream}.v.>"]
    run(body)


@needs_machine_nats
def test_a_full_stream_refuses_with_log_full_and_trimming_makes_room(stream: str) -> None:
    async def body() -> None:
        log = JetStreamLog(LogSettings(url=MACHINE_NATS, stream=stream, max_mb=1))
        await log.start()
        try:
            consumer = await log.consumer("warehouse")
            big = b"x" * 20_000
            stored = 0
            with pytest.raises(LogFull):
                for i in range(200):  # 4 MB into a 1 MB stream
                    await log.append([_big(f"m{i}", big)])
                    stored += 1
            assert 0 < stored < 60
            await consumer.ack(await read_all(consumer, stored))
            assert await log.trim() == stored
            await log.append([_big("after", big)])  # room again, same client
        finally:
            await log.close()
    run(body)


@needs_machine_nats
def test_a_scan_that_times_out_with_messages_left_fails_only_where_all_must_be_read(
        stream: str) -> None:
    async def body() -> None:
        log = JetStreamLog(LogSettings(url=MACHINE_NATS, stream=stream))
        await log.start()
        nc = await nats.connect(MACHINE_NATS)
        try:
            await log.append([entry(f"m{i}") for i in range(3)])
            js, subject = nc.jetstream(), f"{stream}.m.>"
            assert len([m async for m in scan(js, stream, subject, timeout=5)]) == 3
            # no time for the first batch to come: 3 messages still pending
            with pytest.raises(LogError, match=r"\(3 messages\)"):  # the erasure's scan
                _ = [m async for m in scan(js, stream, subject, timeout=1e-6, whole=True)]
            assert [m async for m in scan(js, stream, subject, timeout=1e-6)] == []  # a lookup's
            assert (await js.stream_info(stream)).state.consumer_count == 0  # none left behind
        finally:
            await nc.close()
            await log.close()
    run(body)


def _big(message_id: str, body: bytes) -> Entry:
    e = entry(message_id)
    e.body = body
    return e


@needs_binary
def test_nats_down_at_start_then_up_recovers_without_a_new_client(tmp_path: Path) -> None:
    port = free_port()
    node = NatsNode(tmp_path, "solo", port=port)

    async def body() -> None:
        log = JetStreamLog(LogSettings(url=node.url, stream="trackd"), publish_timeout=2.0,
                           reconnect_wait=0.2)
        await log.start()  # nothing listens yet: no exception, appends fail with 503s
        try:
            assert not log.healthy
            with pytest.raises(LogUnavailable, match="unreachable"):
                await log.append([entry("m0")])
            node.start()
            await eventually(lambda: _appends(log, "m1"))
            assert log.healthy
            consumer = await log.consumer("warehouse")
            assert ids(await read_all(consumer, 1)) == ["m1"]
            node.kill()  # and down again, then up again: the same client recovers
            await eventually(lambda: _refused(log, "m2"))
            assert not log.healthy
            with pytest.raises(LogUnavailable):
                await consumer.read(10, wait=0.2)
            node.start()
            await eventually(lambda: _appends(log, "m3"))
            # The same consumer handle reads on. m1 was read and never acknowledged: it may
            # come again first (after ack_wait, or when a kill -9 lost the consumer's state),
            # as at-least-once allows; it did so now and then on a loaded machine.
            seen: list[str] = []

            async def m3_came() -> bool:
                seen.extend(ids(await consumer.read(10, wait=0.2)))
                return "m3" in seen

            await eventually(m3_came)
            assert seen[-1] == "m3" and set(seen) <= {"m1", "m3"}, seen
        finally:
            await log.close()
            node.kill()
    run(body)


async def _appends(log: JetStreamLog, message_id: str) -> bool:
    try:
        await log.append([entry(message_id)])
    except LogError:
        return False
    return True


async def _consumer(log: JetStreamLog) -> JetStreamConsumer | None:
    """The `warehouse` consumer, or None while the restarted cluster cannot answer yet."""
    try:
        return await log.consumer("warehouse")
    except LogUnavailable:
        return None


async def _refused(log: JetStreamLog, message_id: str) -> bool:
    return not await _appends(log, message_id)


@pytest.mark.slow
@needs_binary
def test_an_r3_stream_keeps_accepting_with_one_node_killed(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path).start()

    async def body() -> None:
        log = JetStreamLog(LogSettings(url=cluster.url, stream="trackd", replicas=3),
                           publish_timeout=2.0, reconnect_wait=0.2)
        await log.start()
        try:
            await eventually(lambda: _appends(log, "before"), timeout=60)
            cluster.nodes[0].kill()  # kill -9 one of three
            await eventually(lambda: _appends(log, "one-down"), timeout=30)
            for i in range(20):  # and it keeps accepting
                await log.append([entry(f"one-down-{i}")])
            for node in cluster.nodes[1:]:
                node.kill()
            with pytest.raises(LogError):  # unreachable, or no PubAck in time
                await log.append([entry("all-down")])
            assert not log.healthy
            cluster.start()  # every node back, same data dirs; the same client reconnects
            await eventually(lambda: _appends(log, "after"), timeout=60)
            consumer = await eventually(lambda: _consumer(log), timeout=60)
            got = set(ids(await read_all(consumer, 23, timeout=30)))
            assert {"before", "one-down", "after"} <= got
        finally:
            await log.close()
            cluster.stop()
    run(body, timeout=240)
