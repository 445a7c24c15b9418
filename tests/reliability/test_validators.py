"""Property tests of the validator: any JSON-like dict gets None or a one-line reason."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from trackd.messages import limits
from trackd.messages.validate import problem

scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
           | st.text(max_size=300))
json_like = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=300), children, max_size=6),
    max_leaves=40)
known_keys = st.sampled_from(["type", "userId", "anonymousId", "event", "properties", "traits",
                              "context", "integrations", "messageId", "timestamp", "sentAt",
                              "originalTimestamp", "groupId", "previousId", "name"])
messages = st.dictionaries(known_keys | st.text(max_size=20), json_like, max_size=12)
kinds = st.none() | st.sampled_from(sorted(limits.TYPES)) | st.text(max_size=10)


@settings(max_examples=400, deadline=None)
@given(message=messages, kind=kinds)
def test_problem_never_raises_and_answers_none_or_one_line(message: dict[str, Any],
                                                           kind: str | None) -> None:
    reason = problem(message, kind)
    assert reason is None or (isinstance(reason, str) and reason)


valid_ids = st.text(min_size=1, max_size=255).filter(str.strip) | st.integers()


@settings(max_examples=300, deadline=None)
@given(user_id=valid_ids, event=st.text(min_size=1, max_size=200).filter(
    lambda e: not e.startswith("$")), properties=st.dictionaries(
    st.text(max_size=50), scalars, max_size=20))
def test_well_formed_track_is_accepted(user_id: Any, event: str,
                                       properties: dict[str, Any]) -> None:
    message = {"userId": user_id, "event": event, "properties": properties}
    assert problem(message, "track") is None
    assert isinstance(message["userId"], str)  # numeric ids become strings


@settings(max_examples=200, deadline=None)
@given(depth=st.integers(min_value=4, max_value=3000))
def test_deep_properties_are_refused_not_recursed(depth: int) -> None:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value}
    reason = problem({"userId": "u", "event": "e", "properties": value}, "track")
    assert reason == "Properties nested deeper than 3 levels"
