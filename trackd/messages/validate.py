"""Judge one message against the contract; the exact messages here are pinned by tests.

`problem(message, kind)` returns None for a valid message, or the one-line reason it is refused.
It normalises in place what the contract says is accepted but normalised: numeric ids become
strings. Everything else in the message is left exactly as sent.

The shape rules of properties/traits (nesting, key and array lengths) live in `payload`.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from trackd.messages import limits
from trackd.messages.payload import payload_problem


def problem(message: dict[str, Any], kind: str | None) -> str | None:
    """Return why `message` is refused, or None. `kind` is the path's type, None in a batch.

    The rules are checked in a fixed order (the first broken one is the answer). Each field is
    read once with a local `get`, and the ids are normalised only when one is not already a
    string: this runs once per event, so its dict lookups and calls are a good part of the cost
    of a request.
    """
    get = message.get
    if kind is None:
        kind = get("type")
        if kind is None or kind == "":
            return "Missing required field: type"
        if kind not in limits.TYPES:
            return f"Invalid type: {_short(kind)}"
    else:
        message["type"] = kind
    user_id = get("userId")
    anonymous_id = get("anonymousId")
    group_id = get("groupId")
    previous_id = get("previousId")
    if not ((user_id is None or type(user_id) is str)
            and (anonymous_id is None or type(anonymous_id) is str)
            and (group_id is None or type(group_id) is str)
            and (previous_id is None or type(previous_id) is str)):
        reason = _normalise_ids(message)
        if reason is not None:
            return reason
        user_id = get("userId")
        anonymous_id = get("anonymousId")
        group_id = get("groupId")
        previous_id = get("previousId")
    # userId or anonymousId
    if kind == "alias":
        if not user_id:
            return "Missing required field: userId"
    elif not user_id and not anonymous_id:
        return "Missing required field: userId or anonymousId"
    if user_id and len(user_id) > limits.MAX_ID_CHARS:
        return f"userId exceeds {limits.MAX_ID_CHARS} characters"
    if anonymous_id and len(anonymous_id) > limits.MAX_ID_CHARS:
        return f"anonymousId exceeds {limits.MAX_ID_CHARS} characters"
    # the fields each type requires
    if kind == "track":
        event = get("event")
        if event is None or event == "":
            return "Missing required field: event"
        if not isinstance(event, str):
            return "event must be a string"
        if len(event) > limits.MAX_EVENT_NAME:
            return f"Event name exceeds {limits.MAX_EVENT_NAME} characters"
        if event.startswith("$"):
            return "Event name cannot start with '$'"
    elif kind == "group":
        if not group_id:
            return "Missing required field: groupId"
        if len(group_id) > limits.MAX_ID_CHARS:
            return f"groupId exceeds {limits.MAX_ID_CHARS} characters"
    elif kind == "alias":
        if not previous_id:
            return "Missing required field: previousId"
        if len(previous_id) > limits.MAX_ID_CHARS:
            return f"previousId exceeds {limits.MAX_ID_CHARS} characters"
    value = get("name")
    if value is not None and not isinstance(value, str):
        return "name must be a string"
    value = get("category")
    if value is not None and not isinstance(value, str):
        return "category must be a string"
    # objects
    value = get("context")
    if value is not None and not isinstance(value, dict):
        return "context must be an object"
    value = get("integrations")
    if value is not None and not isinstance(value, dict):
        return "integrations must be an object"
    payload = limits.PAYLOAD_FIELD.get(kind)
    if payload is not None:
        value = get(payload)
        if value is not None:
            if not isinstance(value, dict):
                return f"{payload} must be an object"
            reason = payload_problem(value)
            if reason is not None:
                return reason
    # messageId and timestamps
    message_id = get("messageId")
    if message_id is not None:
        if not isinstance(message_id, str):
            return "messageId must be a string"
        if len(message_id) > limits.MAX_MESSAGE_ID_CHARS:
            return f"messageId exceeds {limits.MAX_MESSAGE_ID_CHARS} characters"
    for name in limits.TIMESTAMP_FIELDS:
        value = get(name)
        if value is not None and parse_timestamp(value) is None:
            return f"Invalid timestamp: {name}"
    return None


def parse_timestamp(value: object) -> datetime | None:
    """An ISO-8601 string with a time zone, as an aware datetime; None when it is not one."""
    if not isinstance(value, str) or len(value) > 64 or len(value) < 16:
        return None
    return _parse_cached(value)


@functools.lru_cache(maxsize=4096)
def _parse_cached(value: str) -> datetime | None:
    """Cached because validation and enrichment parse the same strings, and all the items of a
    batch share its sentAt; the datetimes returned are immutable, so sharing them is safe."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is UTC:  # `Z` or `+00:00`, nearly every stamp: nothing more to check
        return parsed
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return None
    try:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC: not representable
        parsed.astimezone(UTC)
    except OverflowError:
        return None
    return parsed


def _short(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 50 else text[:50] + "..."


def _normalise_ids(message: dict[str, Any]) -> str | None:
    """Numeric ids become strings, in place; the reason when an id has another type."""
    for name in ("userId", "anonymousId", "groupId", "previousId"):
        reason = _as_id(message, name)
        if reason is not None:
            return reason
    return None


def _as_id(message: dict[str, Any], name: str) -> str | None:
    """Normalise an id field in place; return a reason when it has the wrong type."""
    value = message.get(name)
    if value is None or isinstance(value, str):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{name} must be a string"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return f"{name} must be a string"
        message[name] = str(int(value)) if value.is_integer() else repr(value)
    else:
        message[name] = str(value)
    return None
