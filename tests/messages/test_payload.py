"""payload: the cheap proof `_fits` never lets through what the exact walk refuses."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trackd.messages.payload import _fits, _walk, payload_problem

keys = st.sampled_from(["a", "b", "", "k" * 255, "k" * 256]) | st.text(max_size=4)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4)
arrays = st.builds(lambda n, v: [v] * n, st.sampled_from([254, 255, 256]), scalars)
values = st.recursive(
    scalars | arrays,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=25)


@settings(max_examples=500, deadline=None)
@given(payload=st.dictionaries(keys, values, max_size=6))
def test_the_shortcut_agrees_with_the_walk(payload: dict[str, Any]) -> None:
    assert payload_problem(payload) == _walk(payload)
    if _fits(payload, 0):
        assert _walk(payload) is None


def nested_lists(inner: Any, depth: int) -> Any:
    for _ in range(depth):
        inner = [inner]
    return inner


@pytest.mark.parametrize("depth", [1, 15, 16, 17, 40, 3000])
@pytest.mark.parametrize(("inner", "reason"), [
    (1, None),
    ({"a": {"b": 1}}, None),
    ({"a": {"b": {"c": 1}}}, "Properties nested deeper than 3 levels"),
    ({"k" * 256: 1}, "Property name exceeds 255 characters"),
    (list(range(256)), "Array exceeds 255 elements"),
])
def test_arrays_nested_past_the_shortcut_are_walked(depth: int, inner: Any,
                                                   reason: str | None) -> None:
    assert payload_problem({"x": nested_lists(inner, depth)}) == reason


def test_the_first_problem_in_walk_order_is_the_one_reported() -> None:
    payload = {"a": {"b": {"c": {}}}, "k" * 256: 1, "z": list(range(300))}
    assert payload_problem(payload) == "Properties nested deeper than 3 levels"
    assert payload_problem({"z": list(range(300)), **payload}) == "Array exceeds 255 elements"


def test_values_the_decoder_never_makes_are_left_to_the_walk() -> None:
    # A caller of problem() (trackd.client) may pass dict subclasses or odd keys.
    assert not _fits({"a": OrderedDict(b=1)}, 0)
    assert payload_problem({"a": OrderedDict(b=OrderedDict(c=OrderedDict()))}) == (
        "Properties nested deeper than 3 levels")
    odd_key: dict[Any, Any] = {"a": {"b": {"c": {}}}, 1: "x"}
    assert not _fits({1: "x"}, 0)
    assert payload_problem(odd_key) == (
        "Properties nested deeper than 3 levels")
    assert payload_problem({}) is None
