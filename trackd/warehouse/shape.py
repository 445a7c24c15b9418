"""One enriched message -> the warehouse rows it becomes (pure: no I/O, no types yet).

| call     | rows                                                   | upsert             |
|----------|--------------------------------------------------------|--------------------|
| track    | `tracks` (no properties) + `<event table>` (properties) |                    |
| identify | `identifies` (traits)                                  | `users` by userId  |
| page     | `pages` (`name`, `category`, properties)               |                    |
| screen   | `screens` (`name`, `category`, properties)             |                    |
| group    | `groups` (`group_id`, traits)                          | `accounts` by groupId |
| alias    | `aliases` (`previous_id`)                              |                    |

Every row has the common columns (`id` = messageId, `anonymous_id`, `user_id`, the four
timestamps, `channel` when sent, `context_*`). Nested objects flatten with `_` below their
parent's name, arrays become their JSON text, and every name is go-snakecased (`naming`). A
property or trait whose column is reserved (a common column, a `context_*` name, or the call's
own columns such as `event`) keeps its value under a `_`-prefixed name; on pages
and screens a `name`/`category` property that repeats the call's own value is not repeated, and
fills the column when the call has none. Keys with no usable character (only symbols or
non-ASCII letters) have no column name and are left out, as in Segment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trackd.warehouse.naming import event_table, reserved_columns, snakecase
from trackd.warehouse.values import text

MAX_DEPTH = 10  # deeper objects are kept as their JSON text in one column


@dataclass(slots=True)
class Row:
    """One row for `table` (in the message's source schema): column -> raw JSON value."""

    table: str
    values: dict[str, Any]


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


@dataclass(slots=True)
class Shaped:
    rows: list[Row] = field(default_factory=list)
    patches: list[Patch] = field(default_factory=list)


def flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects as one level of snake_cased names joined with `_`.

    >>> flatten({"product": {"SKU": "x", "tags": ["a"]}, "price": None})
    {'product_sku': 'x', 'product_tags': '["a"]', 'price': None}

    Explicit nulls are kept (the caller decides what they mean). Iterative, so any nesting
    depth is safe; objects below `MAX_DEPTH` levels are stored as JSON text.
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


def _common(message: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": message.get("messageId"),
        "anonymous_id": message.get("anonymousId"),
        "user_id": message.get("userId"),
        "received_at": message.get("receivedAt"),
        "sent_at": message.get("sentAt"),
        "timestamp": message.get("timestamp"),
        "original_timestamp": message.get("originalTimestamp"),
        "channel": message.get("channel"),
    }
    context = message.get("context")
    if isinstance(context, dict):
        row.update(flatten(context, "context"))
    return row


def _payload(message: dict[str, Any], name: str) -> dict[str, Any]:
    value = message.get(name)
    return flatten(value) if isinstance(value, dict) else {}


def _merge(row: dict[str, Any], payload: dict[str, Any], kind: str) -> None:
    """Add properties/traits to `row` without overwriting its reserved columns."""
    reserved = reserved_columns(kind)
    fillable = kind in ("pages", "screens")
    for name, value in payload.items():
        if name in reserved or name.startswith("context_"):
            if fillable and name in ("name", "category"):
                if row.get(name) is None:
                    row[name] = value
                    continue
                if row[name] == value:
                    continue
            name = "_" + name
        row[name] = value


def shape(message: dict[str, Any]) -> Shaped:
    """The rows and upserts one enriched message becomes (see the module docstring)."""
    kind = message.get("type")
    out = Shaped()
    row = _common(message)
    if kind == "track":
        event = str(message.get("event") or "")
        table = event_table(event)
        row["event"] = table
        row["event_text"] = event
        out.rows.append(Row("tracks", dict(row)))
        if table:
            _merge(row, _payload(message, "properties"), "tracks")
            out.rows.append(Row(table, row))
    elif kind == "identify":
        traits = _payload(message, "traits")
        _merge(row, traits, "identifies")
        out.rows.append(Row("identifies", row))
        user_id = message.get("userId")
        if user_id:
            out.patches.append(Patch("users", str(user_id), str(message.get("receivedAt")),
                                     _renamed(traits, "identifies")))
    elif kind in ("page", "screen"):
        table = "pages" if kind == "page" else "screens"
        row["name"] = message.get("name")
        row["category"] = message.get("category")
        _merge(row, _payload(message, "properties"), table)
        out.rows.append(Row(table, row))
    elif kind == "group":
        traits = _payload(message, "traits")
        row["group_id"] = message.get("groupId")
        _merge(row, traits, "groups")
        out.rows.append(Row("groups", row))
        group_id = message.get("groupId")
        if group_id:
            out.patches.append(Patch("accounts", str(group_id), str(message.get("receivedAt")),
                                     _renamed(traits, "groups")))
    elif kind == "alias":
        row["previous_id"] = message.get("previousId")
        out.rows.append(Row("aliases", row))
    return out


def _renamed(traits: dict[str, Any], kind: str) -> dict[str, Any]:
    """Traits under the column names they have in identifies/groups (reserved -> `_name`)."""
    reserved = reserved_columns(kind)
    return {("_" + k if k in reserved or k.startswith("context_") else k): v
            for k, v in traits.items()}
