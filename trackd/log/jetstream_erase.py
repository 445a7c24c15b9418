"""Deletion from the NATS JetStream log: a regulation's subjects' messages, quarantine entries
and violations, erased from the stream (see `trackd.log.jetstream` for the subjects).

The stream is read from start to end through an ephemeral consumer, subject kind by subject
kind (`m`, `q`, `v`), in batches (never all in memory); each message of a subject (its
`userId`, `anonymousId` or `previousId`, `trackd.privacy.subjects`) is deleted with JetStream's
secure delete (`STREAM.MSG.DELETE` with `no_erase: false`): the server overwrites the message
in its block file with random bytes rather than only marking it deleted. A violation is erased
with the message it was about. `widen` adds the anonymous ids linked to the users by the
messages still in the stream, as the SQLite log's erasure does. `expire_quarantine` is the
retention of the quarantine (`retention_days`): a source's entries received before a cutoff.

What stays outside a server's block files (the Raft log of a replicated stream, a backup or a
mirror) is said in docs/privacy.md.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from trackd.errors import LogError
from trackd.log.jetstream_consumer import MSG_ID
from trackd.log.jetstream_lookup import QuarantineEntry, scan
from trackd.log.records import Violation
from trackd.privacy.subjects import Subjects

NO_MESSAGE = 10037  # JetStream's error code for "no message found" (trimmed meanwhile)
_decode_quarantine = msgspec.msgpack.Decoder(QuarantineEntry).decode
_decode_violation = msgspec.msgpack.Decoder(Violation).decode
_decode_json = msgspec.json.Decoder().decode


class JetStreamErasure:
    """The log's side of a deletion on NATS (`trackd.privacy.stores.LogErasure`)."""

    def __init__(self, stream: str, client: Callable[[], Awaitable[Client]], *,
                 timeout: float = 10.0) -> None:
        """`client`: the connected NATS client to use (waits until there is one)."""
        self.stream = stream
        self.client = client
        self.timeout = timeout

    async def widen(self, subjects: Subjects) -> None:
        """Add to `subjects` the anonymous ids linked to its users by messages in the stream."""
        if not subjects.user_ids:
            return
        pattern = subjects.pattern()
        async for msg in self._scan("m"):
            if subjects.in_source(_source(msg)) and pattern.search(msg.data):
                with contextlib.suppress(msgspec.DecodeError):
                    subjects.widen(_decode_json(msg.data))

    async def erase(self, subjects: Subjects) -> int:
        """Securely delete the subjects' messages, quarantine entries and the violations of
        their messages; returns how many messages were deleted."""
        nc = await self.client()
        removed = 0
        erased_ids: set[str] = set()
        async for msg in self._scan("m"):
            if subjects.in_source(_source(msg)) and subjects.holds_bytes(msg.data):
                await self._delete(nc, msg)
                removed += 1
                header = (msg.headers or {}).get(MSG_ID, "")
                erased_ids.add(header.split(":", 1)[-1])
        async for msg in self._scan("q"):
            if subjects.in_source(_source(msg)) and _quarantined(msg.data, subjects):
                await self._delete(nc, msg)
                removed += 1
        pattern = subjects.pattern()
        async for msg in self._scan("v"):
            if not subjects.in_source(_source(msg)):
                continue
            try:
                about = _decode_violation(msg.data).message_id
            except msgspec.DecodeError:
                about = None
            if about in erased_ids or pattern.search(msg.data):
                await self._delete(nc, msg)
        return removed

    async def expire_quarantine(self, source: str, cutoff: str) -> int:
        """Securely delete a source's quarantine entries received before `cutoff` (ISO-8601,
        UTC, as the entries' `received_at`); returns how many."""
        nc = await self.client()
        removed = 0
        async for msg in self._scan(f"q.{source}"):
            try:
                old = _decode_quarantine(msg.data).received_at < cutoff
            except msgspec.DecodeError:
                continue
            if old:
                await self._delete(nc, msg)
                removed += 1
        return removed

    async def _delete(self, nc: Client, msg: Msg) -> None:
        """JetStream's secure delete: the message's bytes are overwritten on the server."""
        seq = msg.metadata.sequence.stream
        reply = await nc.request(f"$JS.API.STREAM.MSG.DELETE.{self.stream}", json.dumps(
            {"seq": seq, "no_erase": False}).encode(), timeout=self.timeout)
        answer: dict[str, Any] = json.loads(reply.data)
        error = answer.get("error")
        if error and error.get("err_code") != NO_MESSAGE:
            raise LogError(f"NATS did not erase message {seq} of {self.stream}: "
                           f"{error.get('description', error)}")

    async def _scan(self, kind: str) -> AsyncIterator[Msg]:
        """Every message on `<stream>.<kind>.>`, from the first, in batches; a timeout with
        messages left is a `LogError` (the store fails rather than being FINISHED)."""
        js = (await self.client()).jetstream(timeout=self.timeout)
        async with contextlib.aclosing(scan(js, self.stream, f"{self.stream}.{kind}.>",
                                            timeout=self.timeout, idle=60.0,
                                            whole=True)) as msgs:
            async for msg in msgs:
                yield msg


def _source(msg: Msg) -> str:
    parts = msg.subject.split(".")
    return parts[2] if len(parts) > 2 else ""


def _quarantined(data: bytes, subjects: Subjects) -> bool:
    """Whether a quarantine entry is one of the subjects' (an undecodable one holding an id's
    bytes counts as theirs)."""
    if not subjects.pattern().search(data):
        return False
    try:
        return subjects.holds_bytes(_decode_quarantine(data).body)
    except msgspec.DecodeError:
        return True
