"""validate.problem: every rule of the contract with its exact message (pure, no I/O)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.messages.cases import ACCEPTED, REFUSED
from trackd.messages.validate import parse_timestamp, problem


@pytest.mark.parametrize(("kind", "message", "reason"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])
def test_single_message_is_refused_with_the_exact_reason(kind: str, message: dict[str, Any],
                                                         reason: str) -> None:
    assert problem(copy.deepcopy(message), kind) == reason


@pytest.mark.parametrize(("kind", "message", "reason"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])
def test_batch_item_is_refused_with_the_exact_reason(kind: str, message: dict[str, Any],
                                                     reason: str) -> None:
    assert problem({**copy.deepcopy(message), "type": kind}, None) == reason


@pytest.mark.parametrize(("kind", "message"), [c[1:] for c in ACCEPTED],
                         ids=[c[0] for c in ACCEPTED])
def test_valid_messages_at_the_limits_are_accepted(kind: str, message: dict[str, Any]) -> None:
    assert problem(copy.deepcopy(message), kind) is None
    assert problem({**copy.deepcopy(message), "type": kind}, None) is None


@pytest.mark.parametrize(("item", "reason"), [
    ({"userId": "u", "event": "E"}, "Missing required field: type"),
    ({"type": "", "userId": "u"}, "Missing required field: type"),
    ({"type": "purchase", "userId": "u"}, "Invalid type: purchase"),
    ({"type": "Track", "userId": "u", "event": "E"}, "Invalid type: Track"),
])
def test_batch_items_need_a_known_type(item: dict[str, Any], reason: str) -> None:
    assert problem(item, None) == reason


def test_the_path_type_overrides_the_body_type() -> None:
    message = {"type": "identify", "userId": "u", "event": "E"}
    assert problem(message, "track") is None
    assert message["type"] == "track"


def test_numeric_ids_become_strings() -> None:
    message: dict[str, Any] = {"userId": 42, "anonymousId": 7.0, "groupId": 1234567890123}
    assert problem(message, "group") is None
    assert message == {"type": "group", "userId": "42", "anonymousId": "7",
                       "groupId": "1234567890123"}


def test_everything_else_is_left_exactly_as_sent() -> None:
    message = {"userId": "u", "event": "E", "properties": {"a": {"b": [1, "x"]}, "c": [{}]},
               "context": {"library": {"name": "x"}}, "_metadata": {"k": 1}, "anything": [1]}
    before = copy.deepcopy(message)
    assert problem(message, "track") is None
    assert message == {**before, "type": "track"}


@pytest.mark.parametrize("value", [
    "2024-05-01T12:00:00Z", "2024-05-01T12:00:00.123Z", "2024-05-01T12:00:00.123456+00:00",
    "2024-05-01T14:00:00+02:00", "2024-05-01T12:00:00-05:30",
])
def test_iso_timestamps_with_a_zone_parse(value: str) -> None:
    assert parse_timestamp(value) is not None


@pytest.mark.parametrize("value", [
    "2024-05-01T12:00:00", "2024-05-01", "12:00:00Z", "not a date", "", None, 1714564800,
    "2024-02-30T00:00:00Z",
])
def test_other_timestamps_do_not_parse(value: object) -> None:
    assert parse_timestamp(value) is None


def test_arrays_add_no_nesting_level() -> None:
    # The rule documented in trackd/messages/validate.py: only objects count.
    def judged(properties: dict[str, Any]) -> str | None:
        return problem({"userId": "u", "event": "E", "properties": properties}, "track")

    assert judged({"a": [{"b": 1}]}) is None
    assert judged({"a": [[{"b": {"c": 1}}]]}) is None
    assert judged({"a": {"b": [{"c": 1}]}}) is None
    assert judged({"a": {"b": [{"c": {"d": 1}}]}}) == "Properties nested deeper than 3 levels"
    assert judged({"a": [[{"b": {"c": {"d": 1}}}]]}) == "Properties nested deeper than 3 levels"


def test_very_deep_values_are_judged_without_recursion_errors() -> None:
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    assert problem({"userId": "u", "event": "E", "properties": {"a": deep}}, "track") is None
    deep_object: Any = 1
    for _ in range(5000):
        deep_object = {"k": deep_object}
    assert problem({"userId": "u", "traits": deep_object}, "identify") == (
        "Properties nested deeper than 3 levels")
    wide = [list(range(255)) for _ in range(255)]
    assert problem({"userId": "u", "event": "E", "properties": {"w": wide}}, "track") is None
