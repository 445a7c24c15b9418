"""Call arguments -> one validated wire message and its JSON encoding.

The verdict is the server's: the message is judged by `trackd.messages.validate.problem`, the
function the server runs, and refused with its exact text. Values are first turned into plain
JSON data (a copy), so what is judged is exactly what is sent, and mutating your dicts after
the call changes nothing that was queued.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID, uuid4

import trackd
from trackd.client._errors import ValidationError
from trackd.client._types import Callback, Item, Message
from trackd.messages import limits
from trackd.messages.validate import problem

LIBRARY = {"name": "trackd-python", "version": trackd.__version__}
TOO_LARGE = "Event payload exceeds 32KB limit"
# A naive datetime this close to datetime.now() is taken as local time, any other as UTC:
# analytics-python's guess, kept so naive datetimes mean the same thing in both libraries.
_LOCAL_GUESS_SECONDS = 5.0


def build(kind: str, fields: Mapping[str, Any], callback: Callback | None = None) -> Item:
    """Return the queued form of one call, or raise `ValidationError` with the server's reason.

    `fields` holds wire names (`userId`, `properties`, ...); None values are left out. The
    result always has `type`, `messageId` (a uuid4 unless given), `timestamp` (UTC, ISO-8601
    with milliseconds, `+00:00`), `context.library` and `integrations`.
    """
    message: Message = {"type": kind}
    try:
        for name, value in fields.items():
            if value is not None and name != "timestamp":
                message[name] = _plain(value, name)
    except RecursionError:
        raise ValidationError("Message is nested too deeply (or refers to itself)") from None
    message["messageId"] = _message_id(message.get("messageId"))
    message["timestamp"] = _timestamp(fields.get("timestamp"))
    context = message.setdefault("context", {})
    if isinstance(context, dict):
        context["library"] = dict(LIBRARY)
    message.setdefault("integrations", {})
    reason = problem(message, kind)
    if reason is not None:
        raise ValidationError(reason)
    encoded = encode(message)
    if len(encoded) > limits.MAX_MESSAGE_BYTES:
        raise ValidationError(TOO_LARGE)
    return Item(message, encoded, callback)


def encode(value: object) -> bytes:
    """Compact UTF-8 JSON, the form whose length the server's byte limits count."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def format_timestamp(moment: datetime) -> str:
    """`2026-01-15T10:30:00.000+00:00`: UTC with milliseconds."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def _message_id(value: object) -> object:
    if value is None:
        return str(uuid4())
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # analytics-python stringifies numeric ids
    return value  # anything else is judged by problem()


def _timestamp(value: object) -> object:
    if value is None:
        return format_timestamp(datetime.now(UTC))
    if isinstance(value, datetime):
        return format_timestamp(_aware(value))
    if isinstance(value, str):
        return value  # judged by problem(): ISO-8601 with a time zone
    raise ValidationError("Invalid timestamp: timestamp")


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is not None and moment.utcoffset() is not None:
        return moment
    if abs((datetime.now() - moment).total_seconds()) < _LOCAL_GUESS_SECONDS:
        return moment.astimezone()  # made by datetime.now(): local time
    return moment.replace(tzinfo=UTC)


def _plain(value: object, path: str) -> Any:
    """A copy of `value` made of dict/list/str/int/float/bool/None, or ValidationError."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{path} is {value!r}, which JSON cannot carry")
        return value
    if isinstance(value, Mapping):
        return {_key(key, path): _plain(item, f"{path}.{key}") for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, datetime):
        return _aware(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return _plain(float(value), path)
    if isinstance(value, Enum):
        return _plain(value.value, path)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise ValidationError(f"{path} is bytes that are not UTF-8") from None
    raise ValidationError(f"{path} is a {type(value).__name__}, which is not JSON data")


def _key(key: object, path: str) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    raise ValidationError(f"{path} has a {type(key).__name__} key; keys must be strings")
