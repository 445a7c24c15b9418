"""A plan written from messages already received (`trackd plan infer`).

Every track event gets the JSON Schema of the properties it was seen with, identify and group
the schema of their traits, pages and screens one schema each (`"*"`): for every field its
observed types (integer when every number was whole), `required` when present in every
message, nested objects and arrays of objects described the same way, and an `enum` for a
string field with few distinct values seen often (at most ENUM_MAX values, each seen
ENUM_REPEATS times on average). The plan's controls are all `flag`: nothing is refused until
a person decides to. By construction every message it came from keeps the plan.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import yaml

ENUM_MAX = 10
ENUM_REPEATS = 3
_TYPE_ORDER = ("object", "array", "string", "integer", "number", "boolean", "null")


def infer(messages: Iterable[dict[str, Any]], name: str) -> dict[str, Any]:
    """The plan (as data) of `messages`, named `name`."""
    events: dict[str, list[Any]] = defaultdict(list)
    traits: dict[str, list[Any]] = defaultdict(list)
    named: dict[str, list[Any]] = defaultdict(list)
    for message in messages:
        kind = message.get("type")
        if kind == "track" and isinstance(message.get("event"), str):
            events[message["event"]].append(message.get("properties", {}))
        elif kind in ("identify", "group"):
            traits[kind].append(message.get("traits", {}))
        elif kind in ("page", "screen"):
            named[f"{kind}s"].append(message.get("properties", {}))
    plan: dict[str, Any] = {
        "name": name, "version": 1,
        "controls": {"unplanned_events": "flag", "unplanned_properties": "flag",
                     "violations": "flag"},
        "events": {event: {"properties": schema_of(values)}
                   for event, values in sorted(events.items())}}
    for kind in ("identify", "group"):
        if kind in traits:
            plan[kind] = {"traits": schema_of(traits[kind])}
    for section in ("pages", "screens"):
        if section in named:
            plan[section] = {"*": {"properties": schema_of(named[section])}}
    return plan


def schema_of(values: list[Any]) -> dict[str, Any]:
    """The JSON Schema of a field from the values it had (each present)."""
    types = sorted({_type_of(v) for v in values}, key=_TYPE_ORDER.index)
    if "integer" in types and "number" in types:
        types.remove("integer")
    schema: dict[str, Any] = {"type": types[0] if len(types) == 1 else types}
    objects = [v for v in values if isinstance(v, dict)]
    if objects:
        keys = list(dict.fromkeys(k for obj in objects for k in obj))
        required = [k for k in keys if all(k in obj for obj in objects)]
        if required:
            schema["required"] = required
        schema["properties"] = {k: schema_of([o[k] for o in objects if k in o]) for k in keys}
    items = [item for v in values if isinstance(v, list) for item in v]
    if items:
        schema["items"] = schema_of(items)
    strings = [v for v in values if isinstance(v, str)]
    distinct = list(dict.fromkeys(strings))
    if strings and len(distinct) <= ENUM_MAX and len(strings) >= ENUM_REPEATS * len(distinct) \
            and len(strings) == len(values):
        schema["enum"] = sorted(distinct)
    return schema


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def to_yaml(plan: dict[str, Any], header: str) -> str:
    body = yaml.safe_dump(plan, sort_keys=False, allow_unicode=True, width=100)
    return "".join(f"# {line}\n" for line in header.splitlines()) + body
