"""Identify and group calls -> users/accounts patches (pure: no I/O).

The warehouse rows themselves are made in DuckDB (`plan`); users and accounts merge traits
call after call, which `upsert` does in Python from these patches. Their column names are the
ones the same traits get in `identifies` and `groups`: nested objects flatten with `_` below
their parent's snake_cased name, arrays become their JSON text, objects deeper than `MAX_DEPTH`
levels are kept as JSON text, keys with no usable character are left out, and a reserved name
keeps its value under a `_`-prefixed one (`naming.payload_column`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trackd.warehouse.naming import payload_column, snakecase
from trackd.warehouse.plan import MAX_DEPTH
from trackd.warehouse.values import text


@dataclass(slots=True)
class Patch:
    """A trait-merging upsert of one `users`/`accounts` row.

    `values` holds only the traits the call sent; an explicit null is kept as None (it sets the
    column to null), an omitted trait is absent (it keeps its value).
    """

    table: str
    id: str
    received_at: str
    values: dict[str, Any]


def flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects as one level of snake_cased names joined with `_`.

    >>> flatten({"product": {"SKU": "x", "tags": ["a"]}, "price": None})
    {'price': None, 'product_sku': 'x', 'product_tags': '["a"]'}

    Explicit nulls are kept (the caller decides what they mean). Iterative, so any nesting
    depth is safe; objects at `MAX_DEPTH` levels are stored as JSON text.
    """
    out: dict[str, Any] = {}
    stack: list[tuple[str, dict[str, Any], int]] = [(prefix, obj, 1)]
    while stack:
        base, current, depth = stack.pop()
        for key, value in current.items():
            part = snakecase(key)
            if not part:
                continue
            name = f"{base}_{part}" if base else part
            if isinstance(value, dict):
                if depth < MAX_DEPTH:
                    stack.append((name, value, depth + 1))
                else:
                    out[name] = text(value)
            elif isinstance(value, list):
                out[name] = text(value)
            else:
                out[name] = value
    return {("_" + k if k[0].isdigit() else k): v for k, v in out.items()}


def patch(message: dict[str, Any]) -> Patch | None:
    """The users (identify with userId) or accounts (group with groupId) patch of a call."""
    kind = message.get("type")
    if kind == "identify":
        table, id_field, as_kind = "users", "userId", "identifies"
    elif kind == "group":
        table, id_field, as_kind = "accounts", "groupId", "groups"
    else:
        return None
    id_ = message.get(id_field)
    if not id_:
        return None
    traits = message.get("traits")
    flat = flatten(traits) if isinstance(traits, dict) else {}
    return Patch(table, str(id_), str(message.get("receivedAt")),
                 {payload_column(k, as_kind): v for k, v in flat.items()})
