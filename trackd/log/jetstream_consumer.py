"""One named consumer on the NATS log: a durable pull consumer with explicit acks.

Every process that opens the same name binds to the same durable consumer, so JetStream splits
the records between them and gives none to two at once. A record read and not acknowledged
within `ack_wait_s` (its process died) is delivered again, to any of them; `retry(delay)`
gives records back with a nak that JetStream honours after `delay` seconds (a plain nak would
redeliver at once). `extend(records)` holds records until `ack` or `retry`, however long: the
handle tells JetStream that work on them is going on (`+WPI`) every third of `ack_wait`, so
they are redelivered to another process only when this one stops telling it (it died, or
lost NATS for longer than `ack_wait`).

`ack` sends a plain ack for every record but the last and waits for the server's answer to
the last: the server handles one connection's acks in order, so when that answer comes every
ack has been applied (one round trip per batch, not per record).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Sequence
from urllib.parse import quote, unquote

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from trackd.errors import LogUnavailable, LogWriteFailed
from trackd.log.records import Record

MSG_ID = "Nats-Msg-Id"
_PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")
_PLAIN = re.compile(r"[!-$&-~]*")  # printable ASCII, no space, no %
_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


def durable_name(name: str) -> str:
    """A consumer name as a JetStream durable name (no `.`, `*`, `>`, `:` or spaces):
    `destination:web` -> `destination_3aweb`; reversible by `consumer_name`."""
    return "".join(chr(b) if b in _SAFE else f"_{b:02x}" for b in name.encode())


def consumer_name(durable: str) -> str:
    out = bytearray()
    i = 0
    while i < len(durable):
        if durable[i] == "_":
            out.append(int(durable[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(ord(durable[i]))
            i += 1
    return out.decode()


def header_value(message_id: str) -> bytes:
    """A messageId as a header value: printable ASCII but `%` as is, the rest %-escaped (a
    write key chooses messageIds: CR, LF or edge spaces must not reach the protocol)."""
    if _PLAIN.fullmatch(message_id):
        return message_id.encode()
    return quote(message_id, safe=_PRINTABLE).encode()


def record_of(msg: Msg) -> Record:
    """A log record from a message on `<stream>.m.<source>.<bucket>`."""
    headers = msg.headers or {}
    source = msg.subject.split(".")[2]
    msg_id = headers.get(MSG_ID, "")[len(source) + 1:]
    return Record(msg.metadata.stream or "", msg.metadata.sequence.stream, source,
                  unquote(msg_id) if "%" in msg_id else msg_id,
                  headers.get("Trackd-Type", ""), headers.get("Trackd-Received-At", ""),
                  msg.data)


class JetStreamConsumer:
    """A `LogConsumer` (see `trackd.log.protocol`): one handle on a durable consumer."""

    def __init__(self, name: str, sub: JetStreamContext.PullSubscription,
                 connected: Callable[[], bool], *, ack_wait: float = 30.0) -> None:
        self.name = name
        self._sub = sub
        self._connected = connected
        self._ack_wait = ack_wait
        self._inflight: dict[int, Msg] = {}  # stream sequence -> the message to ack
        self._held: set[int] = set()  # stream sequences kept from redelivery (`extend`)
        self._keeper: asyncio.Task[None] | None = None
        self._closed = False

    async def read(self, limit: int, *, wait: float = 0.0) -> list[Record]:
        if self._closed:
            return []
        if not self._connected():
            raise LogUnavailable("cannot read: NATS is unreachable")
        try:
            msgs = await self._sub.fetch(max(1, limit), timeout=max(wait, 0.05))
        except TimeoutError:  # nats.errors.TimeoutError is one too
            return []
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise LogUnavailable(f"could not read from NATS: {exc or type(exc).__name__}"
                                 ) from None
        records = []
        for msg in msgs:
            record = record_of(msg)
            self._inflight[record.offset] = msg
            records.append(record)
        return records

    def _take(self, records: Sequence[Record]) -> list[Msg]:
        self._held.difference_update(r.offset for r in records)
        return [msg for r in records if (msg := self._inflight.pop(r.offset, None)) is not None]

    async def ack(self, records: Sequence[Record]) -> None:
        msgs = self._take(records)
        if not msgs:
            return
        try:
            for msg in msgs[:-1]:
                await msg.ack()
            await msgs[-1].ack_sync(timeout=10.0)
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            # Unacknowledged records come again after ack_wait: at least once, not lost.
            raise LogWriteFailed(f"could not acknowledge on NATS: "
                                 f"{exc or type(exc).__name__}") from None

    async def retry(self, records: Sequence[Record], *, delay: float) -> None:
        for msg in self._take(records):
            await msg.nak(delay=delay if delay > 0 else None)

    async def extend(self, records: Sequence[Record]) -> None:
        """Hold `records` until `ack` or `retry` (see the module docstring)."""
        offsets = [r.offset for r in records if r.offset in self._inflight]
        self._held.update(offsets)
        await self._progress(offsets)
        if self._keeper is None and offsets:
            self._keeper = asyncio.create_task(self._keep(), name=f"{self.name}:hold")

    async def _progress(self, offsets: Sequence[int]) -> None:
        try:
            for offset in offsets:
                msg = self._inflight.get(offset)
                if msg is not None:
                    await msg.in_progress()
        except (nats.errors.Error, nats.js.errors.Error):
            pass  # NATS away: told again on the next round, or redelivered after ack_wait

    async def _keep(self) -> None:
        while not self._closed:
            await asyncio.sleep(max(0.1, self._ack_wait / 3))
            await self._progress(list(self._held))

    async def close(self) -> None:
        """Unsubscribe; what was read and not acknowledged comes again after ack_wait."""
        if self._closed:
            return
        self._closed = True
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        self._held.clear()
        self._inflight.clear()
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()
