"""The live stream: `GET /api/v1/live`, server-sent events fed from the log by `LogTail`.

Nothing here runs on the request path: the gateway writes the log, the tail reads it in the
pipeline process. With no subscriber the sink returns at once. Each subscriber has a bounded
buffer; when it is full, what does not fit is dropped and counted, for that subscriber (a
`: dropped N` comment line before its next event) and in `trackd_live_dropped_total`. The
tail never waits for a subscriber, and a full one costs no decoding: its drops are counted
from the frames' headers, on its source, type and status filters only.

Every message goes out without its `writeKey`, and any configured write key found in the
text (a refused message is kept as it was sent) is masked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from trackd.log.tail import Flag, Frame, Refusal
from trackd.observability import Registry

BUFFER = 1000
"""Events a subscriber may have waiting before the next ones are dropped."""
KEEPALIVE = 15.0
MASK = b"[write key]"
_encode = msgspec.json.Encoder().encode
STATUSES = ("accepted", "refused", "violation")


@dataclass(frozen=True, slots=True)
class Item:
    """One message ready to send: the fields filters look at, and its SSE bytes."""

    status: str
    source: str
    type: str
    event: str
    ids: tuple[str, ...]
    text: str
    line: bytes


@dataclass(frozen=True)
class Filter:
    source: str | None = None
    type: str | None = None
    event: str | None = None
    user_id: str | None = None
    q: str | None = None
    status: str | None = None

    @classmethod
    def of(cls, params: Mapping[str, str]) -> Filter:
        values = {name: (params.get(name) or None) for name in
                  ("source", "type", "event", "user_id", "q", "status")}
        if values["q"] is not None:
            values["q"] = values["q"].lower()
        return cls(**values)

    def matches_header(self, status: str, source: str, kind: str) -> bool:
        """Whether a message could match, judged on what needs no decoding."""
        return ((self.status is None or status == self.status)
                and (self.source is None or source == self.source)
                and (self.type is None or kind == self.type))

    def matches(self, item: Item) -> bool:
        return ((self.status is None or item.status == self.status)
                and (self.source is None or item.source == self.source)
                and (self.type is None or item.type == self.type)
                and (self.event is None or item.event == self.event)
                and (self.user_id is None or self.user_id in item.ids)
                and (self.q is None or self.q in item.text))


class Subscriber:
    def __init__(self, where: Filter, capacity: int) -> None:
        self.filter = where
        self.capacity = capacity
        self.buffer: deque[bytes] = deque()
        self.dropped = 0
        self.ready = asyncio.Event()

    @property
    def full(self) -> bool:
        return len(self.buffer) >= self.capacity

    def offer(self, items: Iterable[Item]) -> int:
        """Buffer what matches; returns how many were dropped for want of room."""
        dropped = 0
        if self.full:
            dropped = sum(1 for item in items if self.filter.matches_header(
                item.status, item.source, item.type))
            items = ()
        for item in items:
            if self.filter.matches(item):
                if len(self.buffer) < self.capacity:
                    self.buffer.append(item.line)
                else:
                    dropped += 1
        self.dropped += dropped
        if self.buffer or self.dropped:
            self.ready.set()
        return dropped


class LiveHub:
    def __init__(self, metrics: Registry, write_keys: Iterable[str], *,
                 capacity: int = BUFFER) -> None:
        self.capacity = capacity
        self.subscribers: set[Subscriber] = set()
        self._keys = sorted({k.encode() for k in write_keys if k}, key=len, reverse=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dropped = metrics.counter("trackd_live_dropped_total",
                                        "Live stream events dropped for slow subscribers.")
        self._subscribers = metrics.gauge("trackd_live_subscribers",
                                          "Live stream subscribers connected.")

    # -- the tail's thread -------------------------------------------------------------------
    def sink(self, frames: Sequence[Frame], refusals: Sequence[Refusal],
             flags: Sequence[Flag] = ()) -> None:
        loop = self._loop
        subscribers = list(self.subscribers)
        if not subscribers or loop is None:
            return
        if all(sub.full for sub in subscribers):
            # Nobody has room: count what each misses from the frames' headers, decode nothing
            missed = _missed(subscribers, frames, refusals, flags)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._count_missed, missed)
            return
        items = [item for frame in frames for item in self._accepted(frame)]
        items.extend(self._refused(r) for r in refusals)
        items.extend(self._flagged(f) for f in flags)
        if items:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._dispatch, items)

    def _accepted(self, frame: Frame) -> list[Item]:
        out = []
        for kind, body, message_id in zip(frame.types, frame.messages(), frame.message_ids,
                                          strict=False):
            try:
                message = msgspec.json.decode(body)
            except msgspec.DecodeError:
                continue
            out.append(self._item("accepted", frame.source, frame.received_at, message_id,
                                  kind, message, None))
        return out

    def _refused(self, refusal: Refusal) -> Item:
        message = _decoded(refusal.body)
        kind = message.get("type") if isinstance(message, dict) else None
        return self._item("refused", refusal.source, refusal.received_at,
                          refusal.message_id, kind if isinstance(kind, str) else "", message,
                          refusal.reason)

    def _flagged(self, flag: Flag) -> Item:
        """A violation, with the message as stored (null when it is no longer in the log)."""
        message = None if flag.body is None else _decoded(flag.body)
        v = flag.record
        detail = {"kind": v.violation, "path": v.path, "rule": v.rule, "action": v.action,
                  "planVersion": v.plan_version}
        return self._item("violation", v.source, v.received_at, v.message_id, v.type,
                          message, flag.reason, detail)

    def _item(self, status: str, source: str, received_at: str, message_id: str | None,
              kind: str, message: Any, reason: str | None,
              violation: dict[str, Any] | None = None) -> Item:
        ids: tuple[str, ...] = ()
        event = ""
        if isinstance(message, dict):
            message.pop("writeKey", None)
            ids = tuple(str(message[k]) for k in ("userId", "anonymousId")
                        if message.get(k) is not None)
            name = message.get("event")
            event = name if isinstance(name, str) else ""
        doc: dict[str, Any] = {"status": status, "source": source, "receivedAt": received_at,
                               "messageId": message_id, "type": kind}
        if reason is not None:
            doc["reason"] = reason
        if violation is not None:
            doc["violation"] = violation
        doc["message"] = message
        data = self.mask(_encode(doc))
        return Item(status, source, kind, event, ids, data.decode("utf-8", "replace").lower(),
                    b"data: " + data + b"\n\n")

    def mask(self, data: bytes) -> bytes:
        """`data` with every configured write key replaced."""
        for key in self._keys:
            if key in data:
                data = data.replace(key, MASK)
        return data

    # -- the event loop --------------------------------------------------------------------
    def _count_missed(self, missed: dict[Subscriber, int]) -> None:
        for sub, count in missed.items():
            if count:
                sub.dropped += count
                sub.ready.set()
        total = sum(missed.values())
        if total:
            self._dropped.inc((), total)

    def forget(self, matches: Callable[[bytes], bool]) -> int:
        """Drop the buffered events that `matches` from every subscriber (a privacy
        deletion; call on the event loop, where buffers change). Returns how many went."""
        gone = 0
        for sub in self.subscribers:
            kept = [line for line in sub.buffer if not matches(line)]
            gone += len(sub.buffer) - len(kept)
            sub.buffer.clear()
            sub.buffer.extend(kept)
        return gone

    def _dispatch(self, items: list[Item]) -> None:
        dropped = sum(sub.offer(items) for sub in self.subscribers)
        if dropped:
            self._dropped.inc((), dropped)

    def subscribe(self, where: Filter) -> Subscriber:
        """A new subscriber, fed from the tail's next look on: call in the event loop."""
        self._loop = asyncio.get_running_loop()
        sub = Subscriber(where, self.capacity)
        self.subscribers.add(sub)
        self._subscribers.set((), float(len(self.subscribers)))
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        self._subscribers.set((), float(len(self.subscribers)))

    async def stream(self, where: Filter | Subscriber) -> AsyncGenerator[bytes, None]:
        """SSE lines for one subscriber (a new one for a filter), until the client goes away.

        The route subscribes before it answers, so a client that has the response's headers
        (the browser's `open` event) gets every message logged from then on."""
        sub = self.subscribe(where) if isinstance(where, Filter) else where
        try:
            yield b"retry: 2000\n: connected\n\n"
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sub.ready.wait(), KEEPALIVE)
                sub.ready.clear()
                if not sub.buffer and not sub.dropped:
                    yield b": keepalive\n\n"
                    continue
                chunk = b""
                if sub.dropped:
                    chunk = f": dropped {sub.dropped}\n\n".encode()
                    sub.dropped = 0
                lines = list(sub.buffer)
                sub.buffer.clear()
                yield chunk + b"".join(lines)
        finally:
            self.unsubscribe(sub)


def _decoded(body: bytes) -> Any:
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body.decode("utf-8", "replace")


def _missed(subscribers: Sequence[Subscriber], frames: Sequence[Frame],
            refusals: Sequence[Refusal], flags: Sequence[Flag]) -> dict[Subscriber, int]:
    """Per subscriber, how many of these messages pass its source, type and status filters.

    A full subscriber's drops are counted on these alone (its event, user and text filters
    would need every message decoded: the work a stalled reader must not cost)."""
    kinds: Counter[tuple[str, str, str]] = Counter()
    for frame in frames:
        for kind, n in Counter(frame.types).items():
            kinds[("accepted", frame.source, kind)] += n
    for refusal in refusals:
        kinds[("refused", refusal.source, "")] += 1
    for flag in flags:
        kinds[("violation", flag.record.source, flag.record.type)] += 1
    return {sub: sum(n for key, n in kinds.items() if sub.filter.matches_header(*key))
            for sub in subscribers}
