"""Parse, authenticate, judge and enrich one request's messages, then append them durably.

Single endpoints take one message (type from the path); batch endpoints take an envelope whose
items are judged one by one: valid items are accepted, refused items are listed in the answer
and kept in the quarantine with their reason. Nothing is answered before the log commit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from trackd.errors import (
    AuthenticationError,
    InvalidRequest,
    LogClosed,
    LogError,
    LogFull,
    RateLimited,
    RequestRejected,
    Unavailable,
    ValidationFailed,
)
from trackd.gateway.ratelimit import TokenBucket
from trackd.log.protocol import LogAppender
from trackd.log.records import Entry, Refused, Violation
from trackd.messages import limits
from trackd.messages.enrich import Envelope, MessageIds, enrich
from trackd.messages.validate import parse_timestamp, problem
from trackd.observability import SIZE_BUCKETS, Registry
from trackd.plans.plan import Judgement, Plan
from trackd.privacy.gate import PrivacyGate
from trackd.settings import SourceSettings

_encode = msgspec.json.Encoder().encode
_decode_any = msgspec.json.Decoder().decode


class _Batch(msgspec.Struct):
    batch: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))
    sentAt: Any = None  # noqa: N815 - wire names
    context: Any = None
    integrations: Any = None
    writeKey: Any = None  # noqa: N815


class _Items(msgspec.Struct):
    batch: list[msgspec.Raw] = []


_decode_batch = msgspec.json.Decoder(_Batch).decode
_decode_items = msgspec.json.Decoder(list[msgspec.Raw]).decode
_decode_raw_items = msgspec.json.Decoder(_Items).decode
_decode_members = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_NOT_ENCODABLE = (msgspec.EncodeError, UnicodeEncodeError, OverflowError)
_NOT_JSON_TEXT = "Message holds a value that is not valid JSON text"


def _raw_items(body: bytes) -> list[msgspec.Raw]:
    """The items of a batch body that decoded whole, each as sent (last `batch` key wins,
    as in the whole decoding)."""
    return _decode_raw_items(body).batch


def without_write_key(raw: bytes) -> bytes:
    """A JSON object's bytes without its `writeKey` member; the other members as sent (so
    this works even when the decoded message could not be encoded again)."""
    try:
        members = _decode_members(raw)
    except msgspec.DecodeError:
        return raw
    if "writeKey" not in members:
        return raw
    del members["writeKey"]
    return _encode(members)


def _decoded_each(raws: list[msgspec.Raw]) -> Iterator[Any]:
    """Each item decoded in turn: a bad one (bad UTF-8, nesting past the decoder's limit)
    makes the body as a whole not JSON text, refused when the loop reaches it."""
    for raw in raws:
        try:
            yield _decode_any(bytes(raw))
        except (msgspec.DecodeError, RecursionError):
            raise InvalidRequest("Body is not valid JSON") from None


@dataclass(slots=True)
class Outcome:
    """The answer to a tracking request.

    Not frozen, like `Entry` and for the same reason: one is built per request, and a frozen
    dataclass's `__init__` sets each field through `object.__setattr__`. Nothing mutates one.
    """

    status: int
    body: dict[str, Any]


class Ingestor:
    """The tracking API's logic, independent of HTTP framing."""

    def __init__(self, sources: tuple[SourceSettings, ...], writer: LogAppender,
                 metrics: Registry, *, workers: int = 1,
                 plans: dict[str, Plan] | None = None,
                 privacy: PrivacyGate | None = None) -> None:
        self._by_key = {key: src for src in sources for key in src.write_keys}
        self._buckets = {src.name: TokenBucket(src.rate_limit_per_second / workers)
                         for src in sources if src.rate_limit_per_second > 0}
        self._writer = writer
        self._ids = MessageIds()
        self._accepted = metrics.counter("trackd_messages_accepted_total",
                                         "Messages stored in the log.", ("source", "type"))
        self._refused = metrics.counter("trackd_messages_refused_total",
                                        "Messages refused, by reason.", ("reason",))
        self._per_request = metrics.histogram("trackd_messages_per_request",
                                              "Messages in one request.", SIZE_BUCKETS)
        # Source name -> tracking plan; the same dict is updated in place by a reload.
        self._plans: dict[str, Plan] = {} if plans is None else plans
        self._violations = metrics.counter(
            "trackd_plan_violations_total", "Tracking plan violations, by kind and action.",
            ("source", "violation", "action"))
        # Per-source IP/PII rules and the suppression list (None: no rules, nothing to check).
        self._privacy = privacy
        self._suppressed = metrics.counter(
            "trackd_messages_suppressed_total",
            "Messages of suppressed subjects: answered 200, stored nowhere.", ("source",))

    def source_for(self, write_key: str | None) -> SourceSettings | None:
        return None if write_key is None else self._by_key.get(write_key)

    def _authenticate(self, body_key: object, header_key: str | None) -> SourceSettings:
        key = body_key if isinstance(body_key, str) and body_key else header_key
        if not key:
            raise AuthenticationError("Missing write key: send it as HTTP Basic user or writeKey")
        source = self._by_key.get(key)
        if source is None:
            raise AuthenticationError("Invalid write key")
        return source

    def _refuse_unparsed(self, header_key: str | None, message: str) -> RequestRejected:
        if self.source_for(header_key) is None:
            return AuthenticationError("Missing write key: send it as HTTP Basic user or writeKey")
        return InvalidRequest(message)

    async def single(self, kind: str, body: bytes, header_key: str | None,
                     ip: str | None) -> Outcome:
        if len(body) > limits.MAX_MESSAGE_BYTES:  # the HTTP layer stops reading sooner
            raise ValidationFailed("Event payload exceeds 32KB limit", status=413)
        try:
            message = _decode_any(body)
        except (msgspec.DecodeError, RecursionError):
            raise self._refuse_unparsed(header_key, "Body is not valid JSON") from None
        if not isinstance(message, dict):
            raise self._refuse_unparsed(header_key, "Body must be a JSON object")
        source = self._authenticate(message.get("writeKey"), header_key)
        self._rate_limit(source, 1)
        gate = self._privacy
        if gate is not None and not gate.loaded:
            raise Unavailable("The shared privacy settings are not read yet: retry later",
                              retry_after=1)
        if gate is not None and gate.suppressing() and gate.suppressed(message):
            self._suppressed.inc((source.name,))
            return Outcome(200, {"success": True})
        envelope = Envelope(datetime.now(UTC), ip)
        reason = problem(message, kind)
        plan = self._plans.get(source.name)
        judged = None if reason is not None or plan is None else plan.judge(message)
        if judged is not None and judged.blocked is not None:
            reason = judged.reason
        if reason is not None:
            item = self._refused_item(source, message, self._scrubbed(source, message, body),
                                      None, reason, envelope)
            await self._store([], [item], self._recorded(source, judged, item.message_id,
                                                         envelope, message))
            self._refused.inc((reason.split(":")[0],))
            raise ValidationFailed(reason)
        entry = self._entry(source, message, envelope)
        await self._store([entry], [], self._recorded(source, judged, entry.message_id,
                                                      envelope, message))
        self._accepted.inc((source.name, entry.type))
        self._per_request.observe(1)
        return Outcome(200, {"success": True})

    async def batch(self, body: bytes, header_key: str | None, ip: str | None) -> Outcome:
        source, count, entries, refused, rejected, violations = self._judge_batch(
            body, header_key, ip)
        await self._store(entries, refused, violations)
        for kind, accepted in Counter([entry.type for entry in entries]).items():
            self._accepted.inc((source.name, kind), accepted)
        self._per_request.observe(count)
        if len(rejected) == count:  # (a suppressed item counts as accepted: nothing is said)
            return Outcome(400, {
                "success": False,
                "error": {"type": "validation_error", "message": "No valid message in batch"},
                "code": "validation_error", "message": "No valid message in batch",
                "accepted": 0, "rejected": rejected})
        answer: dict[str, Any] = {"success": True, "accepted": count - len(rejected)}
        if rejected:
            answer["rejected"] = rejected
        return Outcome(200, answer)

    def _judge_batch(self, body: bytes, header_key: str | None, ip: str | None
                     ) -> tuple[SourceSettings, int, list[Entry], list[Refused],
                                list[dict[str, Any]], list[Violation]]:
        """Everything a batch request does before the log: parse, authenticate, check the
        envelope, judge each item. Apart from `batch`, so that the decoded items (several times
        the body's size) are freed before the request waits for its commit."""
        try:
            doc = _decode_any(body)
        except (msgspec.DecodeError, RecursionError):
            doc = None
        messages: Iterable[Any]
        raws: list[msgspec.Raw] | None = None
        if type(doc) is dict:
            # The usual case: the whole body decoded in one call, a quarter cheaper than the
            # envelope, then the array, then each item. An item's bytes as sent, needed for
            # its size and for the quarantine, are found only when needed (`_raw_items`).
            source = self._authenticate(doc.get("writeKey"), header_key)
            items = doc.get("batch")
            if items is None:
                raise ValidationFailed("Missing required field: batch")
            if not isinstance(items, list):
                raise ValidationFailed("batch must be an array")
            messages, count = items, len(items)
            sent_at, context, integrations = (doc.get("sentAt"), doc.get("context"),
                                              doc.get("integrations"))
        else:  # not JSON, not an object, or an item the whole body's decoding refused
            source, envelope_doc, raws = self._parse_stepwise(body, header_key)
            messages, count = _decoded_each(raws), len(raws)
            sent_at, context, integrations = (envelope_doc.sentAt, envelope_doc.context,
                                              envelope_doc.integrations)
        if count > limits.MAX_BATCH_ITEMS:
            raise ValidationFailed(f"Batch exceeds {limits.MAX_BATCH_ITEMS} items ({count})")
        if not count:
            raise ValidationFailed("batch must not be empty")
        if context is not None and not isinstance(context, dict):
            raise ValidationFailed("context must be an object")
        if integrations is not None and not isinstance(integrations, dict):
            raise ValidationFailed("integrations must be an object")
        if sent_at is not None and parse_timestamp(sent_at) is None:
            raise ValidationFailed("Invalid timestamp: sentAt")
        self._rate_limit(source, count)
        envelope = Envelope(datetime.now(UTC), ip, sent_at=sent_at, context=context,
                            integrations=integrations)
        if raws is None and len(body) > limits.MAX_MESSAGE_BYTES:
            raws = _raw_items(body)  # an item may be over the limit: its size is needed
        return source, count, *self._judge_items(source, messages, raws, body, envelope)

    def _parse_stepwise(self, body: bytes, header_key: str | None
                        ) -> tuple[SourceSettings, _Batch, list[msgspec.Raw]]:
        """The envelope, then the array of items as sent: the path of bodies that do not decode
        whole, which says precisely what is wrong (or finds that only one item is bad)."""
        try:
            envelope_doc = _decode_batch(body)
        except msgspec.ValidationError:
            raise self._refuse_unparsed(header_key, "Body must be a JSON object") from None
        except (msgspec.DecodeError, RecursionError):
            raise self._refuse_unparsed(header_key, "Body is not valid JSON") from None
        source = self._authenticate(envelope_doc.writeKey, header_key)
        raw_batch = bytes(envelope_doc.batch)
        if raw_batch == b"null":
            raise ValidationFailed("Missing required field: batch")
        if not raw_batch.startswith(b"["):
            raise ValidationFailed("batch must be an array")
        try:
            return source, envelope_doc, _decode_items(raw_batch)
        except (msgspec.DecodeError, RecursionError):
            raise InvalidRequest("Body is not valid JSON") from None

    def _judge_items(self, source: SourceSettings, messages: Iterable[Any],
               raws: list[msgspec.Raw] | None, body: bytes, envelope: Envelope
               ) -> tuple[list[Entry], list[Refused], list[dict[str, Any]], list[Violation]]:
        """Each item alone: accepted (enriched and encoded) or refused with its reason.

        `raws` holds the items as sent, when they had to be read (None when the body is too
        small for any item to pass the size limit); a refused item's bytes are read then.
        This loop runs once per event, hence `_entry` written out and locals for attributes.
        """
        entries: list[Entry] = []
        refused: list[Refused] = []
        rejected: list[dict[str, Any]] = []
        violations: list[Violation] = []
        name, received_at, new_id = source.name, envelope.received_at, self._ids
        plan = self._plans.get(name)  # None for a source without a plan: no cost per item
        gate = self._privacy  # None, or policy/suppression looked up once per request
        if gate is not None and not gate.loaded:
            raise Unavailable("The shared privacy settings are not read yet: retry later",
                              retry_after=1)
        policy = None if gate is None else gate.policies.get(name)
        suppressed = None if gate is None or not gate.suppressing() else gate.suppressed
        for index, message in enumerate(messages):
            reason: str | None
            judged: Judgement | None = None
            if suppressed is not None and suppressed(message):
                self._suppressed.inc((name,))
                continue
            if not isinstance(message, dict):
                reason = "Message must be a JSON object"
            elif raws is not None and len(raws[index]) > limits.MAX_MESSAGE_BYTES:
                reason = "Event payload exceeds 32KB limit"
            else:
                reason = problem(message, None)
                if reason is None and plan is not None:
                    judged = plan.judge(message)
                    if judged is not None and judged.blocked is not None:
                        reason = judged.reason
            if reason is None:
                message_id = enrich(message, envelope, new_id)
                if policy is not None:
                    policy.apply(message)
                try:
                    encoded = _encode(message)
                except _NOT_ENCODABLE:
                    reason = _NOT_JSON_TEXT
                else:
                    entries.append(Entry(name, message_id, message["type"], received_at,
                                         encoded))
                    if judged is not None:
                        violations += self._recorded(source, judged, message_id, envelope,
                                                     message)
                    continue
            if raws is None:
                raws = _raw_items(body)
            item = self._refused_item(source, message,
                                      self._scrubbed(source, message, bytes(raws[index])),
                                      index, reason, envelope)
            refused.append(item)
            rejected.append({"index": index, "messageId": item.message_id,
                             "error": {"type": "validation_error", "message": reason}})
            self._refused.inc((reason.split(":")[0],))
            if judged is not None:
                violations += self._recorded(source, judged, item.message_id, envelope,
                                             message)
        return entries, refused, rejected, violations

    def _recorded(self, source: SourceSettings, judged: Judgement | None,
                  message_id: str | None, envelope: Envelope,
                  message: dict[str, Any]) -> list[Violation]:
        """A message's plan violations as log records, counted in the metrics."""
        if judged is None:
            return []
        for violation in judged.violations:
            self._violations.inc((source.name, violation.kind, violation.action))
        return judged.records(source.name, message_id, envelope.received_at,
                              str(message["type"]))

    def _entry(self, source: SourceSettings, message: dict[str, Any],
               envelope: Envelope) -> Entry:
        message_id = enrich(message, envelope, self._ids)
        policy = None if self._privacy is None else self._privacy.policies.get(source.name)
        if policy is not None:
            policy.apply(message)
        try:
            body = _encode(message)
        except _NOT_ENCODABLE:
            raise InvalidRequest(_NOT_JSON_TEXT) from None
        return Entry(source.name, message_id, message["type"], envelope.received_at, body)

    def _scrubbed(self, source: SourceSettings, message: Any, raw: bytes) -> bytes:
        """A refused message's bytes with its source's IP/PII rules applied."""
        if self._privacy is None:
            return raw
        return self._privacy.scrub_refused(source.name, message, raw)

    @staticmethod
    def _refused_item(source: SourceSettings, message: Any, raw: bytes, index: int | None,
                      reason: str, envelope: Envelope) -> Refused:
        message_id = message.get("messageId") if isinstance(message, dict) else None
        if isinstance(message, dict):  # the writeKey is a secret: never stored
            raw = without_write_key(raw)
        return Refused(source.name, message_id if isinstance(message_id, str) else None,
                       envelope.received_at, index, reason, raw)

    def _rate_limit(self, source: SourceSettings, count: int) -> None:
        bucket = self._buckets.get(source.name)
        if bucket is not None:
            wait = bucket.take(count)
            if wait:
                raise RateLimited(f"Rate limit of source {source.name} exceeded",
                                  retry_after=int(wait))

    async def _store(self, entries: list[Entry], refused: list[Refused],
                     violations: list[Violation] | None = None) -> None:
        try:
            if violations:
                await self._writer.append(entries, refused, violations)
            else:
                await self._writer.append(entries, refused)
        except LogFull:
            raise Unavailable("Server busy: retry later", retry_after=1) from None
        except LogClosed:
            raise Unavailable("Server shutting down: retry later", retry_after=2) from None
        except LogError:
            raise Unavailable("Could not store messages (storage unavailable): retry later",
                              retry_after=5) from None
