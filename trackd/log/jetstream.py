"""The log on NATS JetStream: a `LogProducer` and a `LogSource` (see `trackd.log.protocol`).

One stream (`[log] stream`, file storage, `replicas` copies, limits retention, discard new)
holds two kinds of subjects:

- `<stream>.m.<source>.<bucket>`: accepted messages, one NATS message each, published with
  `Nats-Msg-Id: <source>:<messageId>` (JetStream stores a repeat within `duplicate_window_s`
  once) and the headers `Trackd-Type` and `Trackd-Received-At`; the payload is the message.
  `bucket` is 3 hex digits of a hash of the messageId, so a lookup by messageId reads one
  4096th of the stream, while the server keeps only 4096 subjects per source.
- `<stream>.q.<source>.<bucket>`: the quarantine (refused messages, with their reasons), on its
  own subjects, which no consumer reads and trimming keeps.
- `<stream>.v.<source>`: tracking plan violations (a `Violation` as msgpack), published with
  the request's messages; the warehouse reads them with the consumer `violations()`.

`append` publishes every message at once (no round trip per message) and returns after the
PubAck of each. NATS unreachable raises `LogUnavailable`; no PubAck within `publish_timeout` or
no stream answering, `LogWriteFailed`; a full stream (`max_mb`), `LogFull`: all are LogErrors,
which the gateway answers with 503 and Retry-After. The client reconnects by itself: the next
append after NATS returns succeeds.

Each consumer name is a durable pull consumer (`trackd.log.jetstream_consumer`). `trim` purges
the message subjects below the lowest acknowledgement floor of the durable consumers, as the
SQLite log deletes what every consumer has committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from trackd.errors import LogClosed, LogError, LogFull, LogUnavailable, LogWriteFailed
from trackd.log.jetstream_consumer import (
    MSG_ID,
    JetStreamConsumer,
    consumer_name,
    durable_name,
    header_value,
)
from trackd.log.jetstream_lookup import (
    JetStreamLookups,
    QuarantineEntry,
    answered,
    bucket,
)
from trackd.log.protocol import Start
from trackd.log.records import Entry, Refused, Violation
from trackd.observability import get_logger
from trackd.settings import LogSettings

log = get_logger("log")
MSG_ID_B = MSG_ID.encode()
STREAM_FULL = 10077  # JetStream's error code for "maximum bytes exceeded" (discard new)
VIOLATIONS = "warehouse-violations"


class _ApiError(msgspec.Struct):
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    """JetStream's answer to a publish: `seq` (and `duplicate`), or an `error`."""

    error: _ApiError | None = None


_decode_puback = msgspec.json.Decoder(_PubAck).decode
_encode_quarantine = msgspec.msgpack.Encoder().encode
decode_violation = msgspec.msgpack.Decoder(Violation).decode


@dataclass(slots=True)
class _Waiter:
    """One append: resolved when all its PubAcks came, failed at the first refusal."""

    done: asyncio.Future[None]
    remaining: int


def _hpub(subject: bytes, reply: bytes, headers: bytes, payload: bytes) -> bytes:
    return b"HPUB %s %s %d %d\r\n%s%s\r\n" % (subject, reply, len(headers),
                                              len(headers) + len(payload), headers, payload)


def _pub(subject: bytes, reply: bytes, payload: bytes) -> bytes:
    return b"PUB %s %s %d\r\n%s\r\n" % (subject, reply, len(payload), payload)


class JetStreamLog(JetStreamLookups):
    """The log of one process on NATS: appends (gateway) and consumers (pipeline).

    >>> log = JetStreamLog(settings.log)
    >>> await log.start()                    # connects (or keeps trying), makes the stream
    >>> await log.append(entries, refused)   # every PubAck received when this returns
    >>> consumer = await log.consumer("warehouse")
    """

    def __init__(self, settings: LogSettings, *, publish_timeout: float = 5.0,
                 reconnect_wait: float = 0.5) -> None:
        if not settings.url:
            raise LogError("the NATS log needs [log] url")
        self.settings = settings
        self.stream = settings.stream
        self.publish_timeout = publish_timeout
        self._reconnect_wait = reconnect_wait
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._stream_ready = False
        self._connecting: asyncio.Task[None] | None = None
        self._closing = False
        self._consumers: list[JetStreamConsumer] = []
        self._inbox: str | None = None  # PubAcks come to <inbox>.<token>
        self._acks: dict[str, _Waiter] = {}
        self._token = 0
        self.last_error: str | None = None
        self._asked: dict[str, float] = {}  # consumer name -> when it was first asked for

    # -- connection --------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect and make the stream; if NATS is not there yet, keep trying in the background
        (appends fail with LogUnavailable meanwhile)."""
        try:
            await self._connect()
        except Exception as exc:
            self._note(f"NATS unreachable: {exc or type(exc).__name__}")
            self._connecting = asyncio.create_task(self._connect_forever())

    async def _connect(self) -> None:
        servers = [s.strip() for s in self.settings.url.split(",") if s.strip()]

        async def on_error(exc: Exception) -> None:
            self._note(f"NATS: {exc or type(exc).__name__}")

        async def on_disconnect() -> None:
            self._note("NATS disconnected; reconnecting")

        async def on_reconnect() -> None:
            log.info("NATS reconnected")
            self.last_error = None

        # One try per server now (the caller retries); once connected, reconnect for ever.
        nc = await nats.connect(
            servers, name="trackd", allow_reconnect=True, max_reconnect_attempts=1,
            reconnect_time_wait=self._reconnect_wait, connect_timeout=2,
            error_cb=on_error, disconnected_cb=on_disconnect, reconnected_cb=on_reconnect)
        nc.options["max_reconnect_attempts"] = -1
        self._nc = nc
        self._js = self._nc.jetstream(timeout=self.publish_timeout)
        self._inbox = self._nc.new_inbox()
        await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_puback)
        await self._ensure_stream()

    async def _connect_forever(self) -> None:
        while not self._closing:
            await asyncio.sleep(self._reconnect_wait)
            try:
                if self._nc is None or self._nc.is_closed:
                    await self._connect()
                else:
                    await self._ensure_stream()
                self.last_error = None
                log.info("NATS log connected", extra={"stream": self.stream})
                return
            except Exception as exc:
                self._note(f"NATS unreachable: {exc or type(exc).__name__}")

    def _note(self, error: str) -> None:
        if self._closing:
            return
        if error != self.last_error:
            log.warning("NATS log problem", extra={"error": error})
        self.last_error = error

    def _config(self) -> api.StreamConfig:
        s = self.settings
        return api.StreamConfig(
            name=self.stream, subjects=[f"{self.stream}.{kind}.>" for kind in "mqv"],
            retention=api.RetentionPolicy.LIMITS, storage=api.StorageType.FILE,
            num_replicas=s.replicas, duplicate_window=s.duplicate_window_s,
            max_bytes=s.max_mb * 1024 * 1024 if s.max_mb else -1,
            discard=api.DiscardPolicy.NEW)

    async def _ensure_stream(self) -> None:
        js = self._jetstream()
        try:
            await js.add_stream(self._config())
        except nats.js.errors.BadRequestError:  # exists with another config: adopt ours
            await js.update_stream(self._config())
        self._stream_ready = True

    def _jetstream(self) -> JetStreamContext:
        if self._closing:
            raise LogClosed("the log is shutting down")
        if self._js is None or self._nc is None or not self._nc.is_connected:
            raise LogUnavailable(f"NATS is unreachable ({self.last_error or 'not connected'})")
        return self._js

    @property
    def healthy(self) -> bool:
        return (not self._closing and self._nc is not None and self._nc.is_connected
                and self._stream_ready)

    async def close(self) -> None:
        self._closing = True
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        for consumer in self._consumers:
            await consumer.close()
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            await self._nc.close()

    # -- producing ---------------------------------------------------------------------------
    async def append(self, entries: Sequence[Entry], refused: Sequence[Refused] = (),
                     violations: Sequence[Violation] = ()) -> None:
        """Publish all at once, then wait for every PubAck (see the module docstring).

        The messages of one call share a reply subject: JetStream answers each exactly once,
        so counting the answers is enough. They are written to the connection as one buffer
        of HPUB commands through nats-py's internal `_send_command` (its `publish` costs about
        as much per message as the server takes to store it; docs/benchmarks.md), which is
        why pyproject pins nats-py below 3.
        """
        self._jetstream()  # raises while unreachable or closing
        nc = self._nc
        if nc is None or not self._stream_ready or self._inbox is None:
            raise LogUnavailable("the NATS log's stream is not set up yet")
        total = len(entries) + len(refused) + len(violations)
        if not total:
            return
        self._token += 1
        token = str(self._token)
        reply = f"{self._inbox}.{token}".encode()
        waiter = _Waiter(asyncio.get_running_loop().create_future(), total)
        self._acks[token] = waiter
        prefix = f"{self.stream}.".encode()
        commands = [_hpub(b"%sm.%s.%s" % (prefix, e.source.encode(), bucket(e.message_id)),
                          reply, b"NATS/1.0\r\n" + MSG_ID_B + b": %s:%s\r\nTrackd-Type: %s\r\n"
                          b"Trackd-Received-At: %s\r\n\r\n" % (
                              e.source.encode(), header_value(e.message_id), e.type.encode(),
                              e.received_at.encode()), e.body) for e in entries]
        commands += [_pub(b"%sq.%s.%s" % (prefix, r.source.encode(), bucket(r.message_id)),
                          reply, _encode_quarantine(QuarantineEntry(
                              r.received_at, r.message_id, r.index, r.reason, r.body)))
                     for r in refused]
        commands += [_pub(b"%sv.%s" % (prefix, v.source.encode()), reply,
                          _encode_quarantine(v)) for v in violations]
        try:
            await nc._send_command(b"".join(commands))
            await nc._flush_pending()
            await asyncio.wait_for(asyncio.shield(waiter.done), self.publish_timeout)
        except TimeoutError:
            raise LogWriteFailed(f"NATS did not acknowledge the messages within "
                                 f"{self.publish_timeout:g} s") from None
        except nats.errors.Error as exc:
            raise LogWriteFailed(f"could not publish to NATS: "
                                 f"{exc or type(exc).__name__}") from None
        finally:
            self._acks.pop(token, None)  # PubAcks still due after a failure are ignored
            if waiter.done.done():
                waiter.done.exception()  # retrieved, so none is logged as lost
            else:
                waiter.done.cancel()

    async def _on_puback(self, msg: Msg) -> None:
        """A PubAck (or JetStream's refusal) for one message of an append."""
        waiter = self._acks.get(msg.subject.rsplit(".", 1)[-1])
        if waiter is None or waiter.done.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            waiter.done.set_exception(LogWriteFailed(f"no NATS stream {self.stream} answered"))
            return
        try:
            answer = _decode_puback(msg.data)
        except msgspec.DecodeError:
            waiter.done.set_exception(LogWriteFailed("NATS answered a publish with no PubAck"))
            return
        if answer.error is None:
            waiter.remaining -= 1
            if waiter.remaining == 0:
                waiter.done.set_result(None)
        elif answer.error.err_code == STREAM_FULL:
            waiter.done.set_exception(LogFull(f"the NATS stream {self.stream} is full"))
        else:
            waiter.done.set_exception(LogWriteFailed(
                f"NATS refused the messages: {answer.error.description}"))

    # -- consuming ---------------------------------------------------------------------------
    async def consumer(self, name: str, *, start: Start = "first") -> JetStreamConsumer:
        """A consumer created at "new" starts when it was first asked for, not when NATS
        first answered: what arrives while this process is still reaching NATS is not
        skipped."""
        self._asked.setdefault(name, time.time())
        return await self._durable(name, f"{self.stream}.m.>", start)

    async def violations(self) -> JetStreamConsumer:
        """The warehouse's consumer of the violations (record bodies: `decode_violation`)."""
        return await self._durable(VIOLATIONS, f"{self.stream}.v.>", "first")

    @answered
    async def _durable(self, name: str, subjects: str, start: Start) -> JetStreamConsumer:
        js = self._jetstream()
        durable = durable_name(name)
        try:
            await js.consumer_info(self.stream, durable)
        except nats.js.errors.NotFoundError:
            await js.add_consumer(self.stream, api.ConsumerConfig(
                durable_name=durable, ack_policy=api.AckPolicy.EXPLICIT,
                deliver_policy=api.DeliverPolicy.BY_START_TIME if start == "new" else
                api.DeliverPolicy.ALL,
                opt_start_time=datetime.fromtimestamp(
                    self._asked.get(name, time.time()), UTC) if start == "new" else None,
                ack_wait=self.settings.ack_wait_s, max_deliver=-1,
                max_ack_pending=self.settings.max_ack_pending,
                filter_subject=subjects))
        sub = await js.pull_subscribe_bind(durable=durable, stream=self.stream)
        consumer = JetStreamConsumer(name, sub, lambda: self._nc is not None
                                     and self._nc.is_connected,
                                     ack_wait=self.settings.ack_wait_s)
        self._consumers.append(consumer)
        return consumer

    async def _durables(self) -> list[api.ConsumerInfo]:
        infos = await self._jetstream().consumers_info(self.stream)
        return [i for i in infos if i.config.durable_name]

    @answered
    async def consumers(self) -> list[str]:
        return sorted(consumer_name(i.config.durable_name or "") for i in await self._durables())

    @answered
    async def unregister(self, name: str) -> None:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self._jetstream().delete_consumer(self.stream, durable_name(name))

    @answered
    async def lag(self, name: str) -> int:
        try:
            info = await self._jetstream().consumer_info(self.stream, durable_name(name))
        except nats.js.errors.NotFoundError:
            return 0
        return (info.num_pending or 0) + (info.num_ack_pending or 0)

    @answered
    async def trim(self) -> int:
        """Purge the messages below every durable consumer's acknowledgement floor."""
        # The stream's end first: what arrives after it is beyond the floor whatever follows.
        last = (await self._jetstream().stream_info(self.stream)).state.last_seq
        durables = await self._durables()
        if not durables:
            return 0
        # A consumer with nothing pending holds nothing back (the violations' consumer sees
        # few messages: its acknowledgement floor stays behind the stream's).
        floor = min([(i.ack_floor.stream_seq if i.ack_floor else 0) or 0 for i in durables
                     if (i.num_pending or 0) + (i.num_ack_pending or 0)] + [last])
        if floor <= 0:
            return 0
        nc = self._nc
        assert nc is not None
        reply = await nc.request(f"$JS.API.STREAM.PURGE.{self.stream}", json.dumps(
            {"filter": f"{self.stream}.m.>", "seq": floor + 1}).encode(),
            timeout=self.publish_timeout)
        answer: dict[str, Any] = json.loads(reply.data)
        if "error" in answer:
            raise LogError(f"could not trim the NATS stream: {answer['error']}")
        return int(answer.get("purged", 0))

