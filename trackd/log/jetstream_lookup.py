"""The NATS log's lookups, for "where is my event" and the health of its consumers: a mixin of
`JetStreamLog` (see `trackd.log.jetstream` for the subjects).

`find` and `quarantined` read the subjects of one messageId's bucket through an ephemeral
consumer (a scan of one 4096th of the stream per source); `behind` is a consumer's lag and
the age of the oldest record it has not acknowledged. `scan` is the reading of a subject
through such an ephemeral consumer, in batches, which the erasure (`trackd.log.jetstream_erase`)
uses too.
"""

from __future__ import annotations

import contextlib
import functools
import zlib
from collections.abc import AsyncGenerator, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from trackd.errors import LogError, LogUnavailable
from trackd.log.jetstream_consumer import durable_name, record_of
from trackd.log.protocol import Quarantined
from trackd.log.records import Record

SCAN_BATCH = 1000


class QuarantineEntry(msgspec.Struct, array_like=True):
    """The payload of a quarantine message (msgpack: the body may be any bytes)."""

    received_at: str
    message_id: str | None
    index: int | None
    reason: str
    body: bytes


_decode_quarantine = msgspec.msgpack.Decoder(QuarantineEntry).decode


def bucket(message_id: str | None) -> bytes:
    """The subject token of a messageId: 3 hex digits of its CRC-32."""
    if message_id is None:
        return b"nil"
    return b"%03x" % (zlib.crc32(message_id.encode()) & 0xFFF)


P = ParamSpec("P")
R = TypeVar("R")


def answered(method: Callable[P, Coroutine[Any, Any, R]]
             ) -> Callable[P, Coroutine[Any, Any, R]]:
    """A JetStream API call's failure (no answer, no quorum yet) as LogUnavailable."""
    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            raise LogUnavailable(f"NATS did not answer: {exc or type(exc).__name__}"
                                 ) from None

    return wrapper


class JetStreamLookups:
    """Lookups over the stream of a connected `JetStreamLog`."""

    stream: str
    publish_timeout: float

    def _jetstream(self) -> JetStreamContext:
        raise NotImplementedError

    @answered
    async def behind(self, name: str) -> tuple[int, float]:
        """`lag(name)`, and the age in seconds of the oldest record not acknowledged (0 when
        caught up): the time JetStream stored it."""
        js = self._jetstream()
        try:
            info = await js.consumer_info(self.stream, durable_name(name))
        except nats.js.errors.NotFoundError:
            return 0, 0.0
        count = (info.num_pending or 0) + (info.num_ack_pending or 0)
        if not count:
            return 0, 0.0
        floor = (info.ack_floor.stream_seq if info.ack_floor else 0) or 0
        try:
            oldest = await js.get_msg(self.stream, seq=floor + 1, next=True,
                                      subject=info.config.filter_subject)
        except nats.js.errors.NotFoundError:  # trimmed or taken meanwhile
            return count, 0.0
        if oldest.time is None:
            return count, 0.0
        return count, max(0.0, (datetime.now(UTC) - oldest.time).total_seconds())

    @answered
    async def find(self, message_id: str, source: str | None = None) -> list[Record]:
        subject = f"{self.stream}.m.{source or '*'}.{bucket(message_id).decode()}"
        return [record for msg in await self._scan(subject)
                if (record := record_of(msg)).message_id == message_id
                and (source is None or record.source == source)]

    @answered
    async def quarantined(self, *, source: str | None = None, message_id: str | None = None,
                          limit: int = 100) -> list[Quarantined]:
        """Newest first: scans back from the end of the stream in growing windows."""
        token = bucket(message_id).decode() if message_id else "*"
        subject = f"{self.stream}.q.{source or '*'}.{token}"
        info = await self._jetstream().stream_info(self.stream)
        last = info.state.last_seq
        window = max(1000, limit * 10)
        while True:
            start = max(1, last - window + 1)
            found = [q for msg in await self._scan(subject, start)
                     if (q := self._quarantined(msg)) is not None
                     and (message_id is None or q["messageId"] == message_id)]
            if len(found) >= limit or start == 1:
                found.reverse()
                return found[:limit]
            window *= 8

    def _quarantined(self, msg: Msg) -> Quarantined | None:
        try:
            q = _decode_quarantine(msg.data)
        except msgspec.DecodeError:
            return None
        return {"shard": self.stream, "id": msg.metadata.sequence.stream,
                "receivedAt": q.received_at, "source": msg.subject.split(".")[2],
                "messageId": q.message_id, "batchIndex": q.index, "reason": q.reason,
                "body": q.body.decode("utf-8", "replace")}

    async def _scan(self, subject: str, start: int = 1) -> list[Msg]:
        """Every message on `subject` from sequence `start`, through an ephemeral consumer."""
        return [msg async for msg in scan(self._jetstream(), self.stream, subject, start=start,
                                          timeout=self.publish_timeout)]


async def scan(js: JetStreamContext, stream: str, subject: str, *, timeout: float,
               start: int | None = None, idle: float = 30.0,
               whole: bool = False) -> AsyncGenerator[Msg, None]:
    """Every message on `subject` of `stream` from sequence `start` (else from the first), in
    batches, through an ephemeral consumer (`idle`: the seconds it outlives its last fetch).

    A fetch that gets nothing within `timeout` ends the scan; with `whole`, only when nothing
    is pending any more (trimmed meanwhile), else it raises `LogError`: never a silent end for
    a reader that must see every message."""
    sub = await js.pull_subscribe(subject, stream=stream, config=api.ConsumerConfig(
        ack_policy=api.AckPolicy.NONE, deliver_policy=api.DeliverPolicy.ALL if start is None
        else api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start,
        inactive_threshold=idle, mem_storage=True, num_replicas=1))
    info = await sub.consumer_info()
    try:
        pending = info.num_pending or 0
        while pending > 0:
            try:
                msgs = await sub.fetch(min(pending, SCAN_BATCH), timeout=timeout)
            except TimeoutError:
                if not whole:
                    break
                pending = (await sub.consumer_info()).num_pending or 0
                if not pending:  # trimmed meanwhile: nothing left to read
                    break
                raise LogError(f"NATS did not deliver the rest of {stream} within "
                               f"{timeout:g} s ({pending} messages)") from None
            for msg in msgs:
                yield msg
            pending = msgs[-1].metadata.num_pending or 0
    finally:
        await sub.unsubscribe()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(stream, info.name)
