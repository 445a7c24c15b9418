"""Server-side enrichment of an accepted message, before it is stored (contract section 6).

- receivedAt: one server clock reading per request (ISO-8601, ms, `Z`);
- messageId: kept, or generated (process prefix + counter: unique and cheap, no uuid4);
- originalTimestamp := the client's timestamp; sentAt := the item's, else the envelope's;
- timestamp := receivedAt - (sentAt - originalTimestamp), corrected for the device's clock skew;
  := originalTimestamp without sentAt; := receivedAt when the client gave none;
- envelope context/integrations deep-merged under the item's own (the item wins);
- context.ip := the client address when absent; version stamped; writeKey removed (a secret).
"""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime
from typing import Any

from trackd.messages.validate import parse_timestamp

API_VERSION = 2


# "00".."99" and "000".."999": iso() looks digits up instead of formatting numbers.
_TWO_DIGITS = tuple(f"{n:02d}" for n in range(100))
_THREE_DIGITS = tuple(f"{n:03d}" for n in range(1000))


def iso(moment: datetime) -> str:
    """UTC ISO-8601 with milliseconds and `Z`, the format every timestamp is stored in.

    A moment already in UTC (the server clock, a client's `Z` stamp) skips `astimezone`.
    Not strftime: its %Y gives "1" rather than "0001" for years before 1000 on glibc. The
    fields are looked up in tables of digits and joined by one f-string without format specs:
    this runs for nearly every event, and formatting seven numbers cost twice as much.
    """
    m = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    year = m.year
    return (f"{year if year >= 1000 else f'{year:04d}'}-{_TWO_DIGITS[m.month]}-"
            f"{_TWO_DIGITS[m.day]}T{_TWO_DIGITS[m.hour]}:{_TWO_DIGITS[m.minute]}:"
            f"{_TWO_DIGITS[m.second]}.{_THREE_DIGITS[m.microsecond // 1000]}Z")


class MessageIds:
    """Generates messageIds: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = "trk-" + os.urandom(6).hex() + "-"
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`, recursively for nested objects; neither input is changed."""
    out = dict(base)
    for key, value in top.items():
        under = out.get(key)
        if isinstance(value, dict) and isinstance(under, dict):
            out[key] = deep_merge(under, value)
        else:
            out[key] = value
    return out


class Envelope:
    """What one request shares across its messages.

    `sent` is `sent_at` parsed once here, for every item of a batch without its own sentAt.
    `ip` may be passed by position, all a single message needs: a class called with keywords
    builds a dict of them first, a third of the cost of building an Envelope.
    """

    __slots__ = ("received", "received_at", "sent_at", "sent", "context", "integrations", "ip")

    def __init__(self, received: datetime, ip: str | None = None, *,
                 sent_at: str | None = None, context: dict[str, Any] | None = None,
                 integrations: dict[str, Any] | None = None) -> None:
        self.received = received
        self.received_at = iso(received)
        self.sent_at = sent_at
        self.sent = parse_timestamp(sent_at) if sent_at is not None else None
        self.context = context
        self.integrations = integrations
        self.ip = ip


def enrich(message: dict[str, Any], envelope: Envelope, new_id: MessageIds) -> str:
    """Enrich a validated message in place; returns its messageId."""
    message.pop("writeKey", None)
    message_id = message.get("messageId")
    if not message_id:
        message_id = message["messageId"] = new_id()
    if envelope.context:
        own = message.get("context")
        message["context"] = deep_merge(envelope.context, own) if own else dict(envelope.context)
    if envelope.integrations:
        own = message.get("integrations")
        message["integrations"] = (deep_merge(envelope.integrations, own) if own
                                   else dict(envelope.integrations))
    if envelope.ip is not None:
        context = message.get("context")
        if context is None:
            message["context"] = {"ip": envelope.ip}
        elif not context.get("ip"):
            context["ip"] = envelope.ip
    message["receivedAt"] = envelope.received_at
    own_sent_at = message.get("sentAt")
    sent_at = own_sent_at or envelope.sent_at
    if sent_at is not None:
        message["sentAt"] = sent_at
    client_ts = message.get("timestamp")
    if client_ts is not None:
        message["originalTimestamp"] = client_ts
        sent = parse_timestamp(own_sent_at) if own_sent_at else envelope.sent
        original = parse_timestamp(client_ts)
        if sent is not None and original is not None:
            try:
                corrected = envelope.received - (sent - original)
            except OverflowError:  # a device clock thousands of years off: keep its stamp
                corrected = original
            message["timestamp"] = iso(corrected)
        elif original is not None:
            message["timestamp"] = iso(original)
    else:
        message["timestamp"] = envelope.received_at
    message["version"] = API_VERSION
    return str(message_id)
