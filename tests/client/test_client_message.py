"""What a call turns into, and which calls are refused with the server's exact words."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from typing import Any

import pytest

import trackd
from trackd.client import Client, ConfigurationError, ValidationError
from trackd.client._message import encode
from trackd.messages import limits
from trackd.messages.validate import parse_timestamp, problem


def offline() -> Client:
    return Client("wk", send=False)


def test_track_builds_the_wire_message() -> None:
    queued, message = offline().track(
        "user123", "Product Purchased", {"price": 99.99}, {"ip": "1.2.3.4"}
    )
    assert queued is True
    assert message["type"] == "track"
    assert message["userId"] == "user123"
    assert message["event"] == "Product Purchased"
    assert message["properties"] == {"price": 99.99}
    assert message["context"] == {
        "ip": "1.2.3.4",
        "library": {"name": "trackd-python", "version": trackd.__version__},
    }
    assert message["integrations"] == {}
    assert uuid.UUID(message["messageId"]).version == 4
    assert message["timestamp"].endswith("+00:00")
    assert len(message["timestamp"]) == len("2026-01-15T10:30:00.000+00:00")
    assert parse_timestamp(message["timestamp"]) is not None
    assert "anonymousId" not in message


def test_every_call_keeps_analytics_pythons_positional_order() -> None:
    client = offline()
    at = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)
    ctx, ints = {"ip": "1.1.1.1"}, {"All": False}
    _, m = client.identify("u", {"plan": "pro"}, ctx, at, "a", ints, "m1")
    assert (m["userId"], m["traits"], m["anonymousId"], m["messageId"]) == (
        "u",
        {"plan": "pro"},
        "a",
        "m1",
    )
    assert (m["timestamp"], m["integrations"]) == ("2026-01-15T10:30:00.000+00:00", ints)
    _, m = client.track("u", "E", {"p": 1}, ctx, at, "a", ints, "m2")
    assert (m["event"], m["properties"], m["anonymousId"], m["messageId"]) == (
        "E",
        {"p": 1},
        "a",
        "m2",
    )
    _, m = client.alias("old", "new", ctx, at, ints, "m3")
    assert (m["previousId"], m["userId"], m["messageId"]) == ("old", "new", "m3")
    _, m = client.group("u", "g", {"size": 3}, ctx, at, "a", ints, "m4")
    assert (m["groupId"], m["traits"], m["anonymousId"], m["messageId"]) == (
        "g",
        {"size": 3},
        "a",
        "m4",
    )
    for call, kind in ((client.page, "page"), (client.screen, "screen")):
        _, m = call("u", "Docs", "Home", {"path": "/"}, ctx, at, "a", ints, "m5")
        assert m["type"] == kind
        assert (m["category"], m["name"], m["properties"], m["anonymousId"]) == (
            "Docs",
            "Home",
            {"path": "/"},
            "a",
        )


def test_the_callers_dicts_are_copied_not_changed() -> None:
    context = {"ip": "1.2.3.4"}
    properties: dict[str, Any] = {"items": [1, 2]}
    _, message = offline().track("u", "E", properties, context)
    properties["items"].append(3)
    assert context == {"ip": "1.2.3.4"}
    assert message["properties"] == {"items": [1, 2]}


class Plan(Enum):
    PRO = "pro"


def test_python_values_become_json_data() -> None:
    moment = datetime(2026, 1, 15, 10, 30, tzinfo=timezone(timedelta(hours=2)))
    ident = uuid.uuid4()
    _, message = offline().track(
        42,
        "E",
        {
            "when": moment,
            "day": date(2026, 1, 15),
            "price": Decimal("9.5"),
            "plan": Plan.PRO,
            "id": ident,
            "tags": ("a", "b"),
            "raw": b"bytes",
            "by_number": {7: "seven"},
        },
        message_id=12345,  # type: ignore[arg-type]
    )
    assert message["userId"] == "42"
    assert message["messageId"] == "12345"
    assert message["properties"] == {
        "when": "2026-01-15T10:30:00+02:00",
        "day": "2026-01-15",
        "price": 9.5,
        "plan": "pro",
        "id": str(ident),
        "tags": ["a", "b"],
        "raw": "bytes",
        "by_number": {"7": "seven"},
    }


def test_timestamps_are_sent_in_utc_with_milliseconds() -> None:
    client = offline()
    aware = datetime(2026, 1, 15, 12, 30, 1, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert (
        client.track("u", "E", timestamp=aware)[1]["timestamp"] == "2026-01-15T10:30:01.123+00:00"
    )
    naive_old = datetime(2020, 1, 1, 8, 0)  # not "now": taken as UTC, as analytics-python does
    assert (
        client.track("u", "E", timestamp=naive_old)[1]["timestamp"]
        == "2020-01-01T08:00:00.000+00:00"
    )
    assert client.track("u", "E", timestamp="2026-01-15T10:30:00Z")[1]["timestamp"] == (
        "2026-01-15T10:30:00Z"
    )


def track(**kwargs: Any) -> Callable[[Client], object]:
    return lambda client: client.track(**kwargs)


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (track(user_id="u"), "Missing required field: event"),
        (track(user_id="u", event=""), "Missing required field: event"),
        (track(event="E"), "Missing required field: userId or anonymousId"),
        (
            track(user_id="", anonymous_id="", event="E"),
            "Missing required field: userId or anonymousId",
        ),
        (track(user_id="u", event="$pageview"), "Event name cannot start with '$'"),
        (track(user_id="u", event="E" * 201), "Event name exceeds 200 characters"),
        (track(user_id="u", event=7), "event must be a string"),
        (track(user_id="x" * 256, event="E"), "userId exceeds 255 characters"),
        (track(anonymous_id="x" * 256, event="E"), "anonymousId exceeds 255 characters"),
        (track(user_id=True, event="E"), "userId must be a string"),
        (track(user_id=["u"], event="E"), "userId must be a string"),
        (track(user_id="u", event="E", properties=[1]), "properties must be an object"),
        (track(user_id="u", event="E", context="web"), "context must be an object"),
        (track(user_id="u", event="E", integrations=[]), "integrations must be an object"),
        (
            track(user_id="u", event="E", properties={f"k{i}": i for i in range(256)}),
            "Too many properties: 256 (max 255)",
        ),
        (
            track(user_id="u", event="E", properties={"k" * 256: 1}),
            "Property name exceeds 255 characters",
        ),
        (
            track(user_id="u", event="E", properties={"a": {"b": {"c": {"d": 1}}}}),
            "Properties nested deeper than 3 levels",
        ),
        (
            track(user_id="u", event="E", properties={"a": list(range(256))}),
            "Array exceeds 255 elements",
        ),
        (
            track(user_id="u", event="E", properties={"a": set(range(256))}),
            "Array exceeds 255 elements",
        ),
        (track(user_id="u", event="E", message_id="m" * 101), "messageId exceeds 100 characters"),
        (track(user_id="u", event="E", timestamp="yesterday"), "Invalid timestamp: timestamp"),
        (
            track(user_id="u", event="E", timestamp="2026-01-15T10:30:00"),
            "Invalid timestamp: timestamp",
        ),
        (track(user_id="u", event="E", timestamp=1700000000), "Invalid timestamp: timestamp"),
        (
            track(user_id="u", event="E", properties={"blob": "x" * limits.MAX_MESSAGE_BYTES}),
            "Event payload exceeds 32KB limit",
        ),
        (lambda c: c.group(user_id="u"), "Missing required field: groupId"),
        (lambda c: c.alias(previous_id="old"), "Missing required field: userId"),
        (lambda c: c.alias(user_id="new"), "Missing required field: previousId"),
        (lambda c: c.identify(traits={"a": 1}), "Missing required field: userId or anonymousId"),
        (lambda c: c.page(user_id="u", name=3), "name must be a string"),
        (lambda c: c.screen(user_id="u", category=3), "category must be a string"),
    ],
)
def test_refused_messages_raise_the_servers_exact_reason(
    call: Callable[[Client], object], reason: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        call(offline())
    assert str(caught.value) == reason
    assert caught.value.reason == reason
    assert isinstance(caught.value, ValueError)


def test_the_verdict_is_the_servers_own_function() -> None:
    _, message = offline().track("u", "E", {"a": [1, {"b": 2}]})
    assert problem(dict(message), "track") is None
    assert problem(dict(message), None) is None


def test_a_message_just_under_32kb_is_accepted() -> None:
    _, message = offline().track("u", "E", {"blob": ""})
    room = limits.MAX_MESSAGE_BYTES - len(encode(message))
    _, message = offline().track("u", "E", {"blob": "x" * room}, message_id=message["messageId"])
    assert len(encode(message)) <= limits.MAX_MESSAGE_BYTES


@pytest.mark.parametrize(
    ("properties", "words"),
    [
        ({"x": float("nan")}, "properties.x is nan, which JSON cannot carry"),
        ({"x": float("inf")}, "properties.x is inf, which JSON cannot carry"),
        ({"x": object()}, "properties.x is a object, which is not JSON data"),
        ({"x": b"\xff"}, "properties.x is bytes that are not UTF-8"),
        ({("a", "b"): 1}, "properties has a tuple key; keys must be strings"),
    ],
)
def test_values_json_cannot_carry_are_refused_at_the_call(
    properties: dict[Any, Any], words: str
) -> None:
    with pytest.raises(ValidationError, match="^" + words.replace(".", r"\.") + "$"):
        offline().track("u", "E", properties)


def test_a_message_that_refers_to_itself_is_refused() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(ValidationError, match="nested too deeply"):
        offline().track("u", "E", context=loop)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"write_key": ""}, "write_key must be a non-empty string"),
        ({"host": "localhost:8088"}, "host must be an http:// or https:// URL"),
        ({"max_queue_size": 0}, "max_queue_size must be an integer at least 1"),
        ({"flush_at": 2501}, "flush_at must be an integer between 1 and 2500"),
        ({"flush_interval": -1}, "flush_interval must be a number at least 0"),
        ({"max_retries": 1.5}, "max_retries must be an integer at least 0"),
        ({"timeout": 0}, "timeout must be a number at least 0.001"),
        ({"thread": 2}, "thread must be 1"),
        ({"on_error": "log"}, "on_error must be callable"),
        ({"upload_size": 10, "flush_at": 20}, "upload_size is another name for flush_at"),
    ],
)
def test_bad_settings_raise_configuration_error(kwargs: dict[str, Any], words: str) -> None:
    arguments: dict[str, Any] = {"write_key": "wk", **kwargs}
    with pytest.raises(ConfigurationError, match=words):
        Client(**arguments)


def test_analytics_python_names_for_batch_settings_are_accepted() -> None:
    client = Client("wk", upload_size=10, upload_interval=2.0, send=False)
    assert (client.options.flush_at, client.options.flush_interval) == (10, 2.0)
