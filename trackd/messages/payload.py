"""The shape rules of `properties` and `traits`: key count, key length, nesting, array length.

Nesting is counted along the path: in `{"a": {"b": {"c": 1}}}` the object at `a.b` is at level 2
and `c` is a key at level 3, which is fine; an object at level 3 (`a.b.c = {...}`) is refused.
Arrays add no level: `{"products": [{"variant": {...}}]}` is read like
`{"products": {"variant": {...}}}`.

Two passes, for speed: `_fits` tries to prove cheaply that nothing can be wrong (almost every
real payload is a flat object of scalars), and only when it cannot does `_walk` look for the
reason. `_walk` alone defines the verdict and the order in which problems are found, so the
shortcut can never change an answer, only skip work.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from trackd.messages import limits

# Exactly the scalar types JSON decodes to. `_fits` proves nothing about anything else (dict or
# str subclasses a caller may pass in, say): those are left to `_walk`.
_SCALARS = frozenset({str, int, float, bool, type(None)})
# Arrays nested deeper than this are left to `_walk`, which needs no recursion.
_FITS_ARRAY_DEPTH = 16


def payload_problem(payload: dict[str, Any]) -> str | None:
    """Why a properties/traits object is refused, or None."""
    if len(payload) > limits.MAX_PROPERTIES:
        return f"Too many properties: {len(payload)} (max {limits.MAX_PROPERTIES})"
    if _fits(payload, 0):
        return None
    return _walk(payload)


def _fits(obj: dict[Any, Any], level: int) -> bool:
    """True when no rule can fail at or below `obj`, an object at `level`; False when unsure.

    The keys and value types of one object are read by loops that run in C, about a third of
    the cost of the walk's Python loop over a flat object of a dozen scalars. No key is too
    long when all of them joined are short enough, which is cheaper to learn than the longest
    key's length (`max(map(len, ...))`, asked only when the joined keys are too long).
    """
    try:
        if (len("".join(obj)) > limits.MAX_PROPERTY_NAME
                and max(map(len, obj)) > limits.MAX_PROPERTY_NAME):
            return False
    except TypeError:  # a key that is not a string: let the walk judge it
        return False
    if _SCALARS.issuperset(map(type, obj.values())):
        return True
    for value in obj.values():
        kind = type(value)
        if kind is dict:
            if level + 1 >= limits.MAX_NESTING or not _fits(value, level + 1):
                return False
        elif kind is list:
            if not _array_fits(value, level, 1):
                return False
        elif kind not in _SCALARS:
            return False
    return True


def _array_fits(array: list[Any], level: int, depth: int) -> bool:
    """`_fits` for an array at `level` (its elements are at the same level), nested `depth`."""
    if len(array) > limits.MAX_ARRAY_ELEMENTS or depth > _FITS_ARRAY_DEPTH:
        return False
    if _SCALARS.issuperset(map(type, array)):
        return True
    for value in array:
        kind = type(value)
        if kind is dict:
            if level + 1 >= limits.MAX_NESTING or not _fits(value, level + 1):
                return False
        elif kind is list:
            if not _array_fits(value, level, depth + 1):
                return False
        elif kind not in _SCALARS:
            return False
    return True


def _walk(payload: dict[str, Any]) -> str | None:
    """Depth-first over every key and value below `payload`, with an explicit stack.

    Values can nest as deep as the JSON decoder allows (about 1000 levels of arrays), so the
    walk must not use Python recursion. An object's values are one level deeper than the
    object; an array's elements are at the array's own level.

    Each container's items are read by a plain `for` loop, left only to descend into a nested
    dict or list (the `else` pops a finished container): most values are scalars, and this
    is about 10 % faster per event than one `next()` call per value.
    """
    stack: list[tuple[Iterator[Any], int, bool]] = [(iter(payload.items()), 0, True)]
    while stack:
        children, level, is_object = stack[-1]
        for child in children:
            if is_object:
                key, value = child
                if len(key) > limits.MAX_PROPERTY_NAME:
                    return f"Property name exceeds {limits.MAX_PROPERTY_NAME} characters"
            else:
                value = child
            if isinstance(value, dict):
                if level + 1 >= limits.MAX_NESTING:
                    return f"Properties nested deeper than {limits.MAX_NESTING} levels"
                stack.append((iter(value.items()), level + 1, True))
                break
            if isinstance(value, list):
                if len(value) > limits.MAX_ARRAY_ELEMENTS:
                    return f"Array exceeds {limits.MAX_ARRAY_ELEMENTS} elements"
                stack.append((iter(value), level, False))  # an array adds no level
                break
        else:
            stack.pop()
    return None
