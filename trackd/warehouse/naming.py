"""Warehouse names: Segment's go-snakecase, event table names, and the reserved columns.

`snakecase` is a faithful port of segmentio/go-snakecase (byte by byte, ASCII only):

- a string made only of lowercase letters, digits and underscores that are followed by a
  lowercase letter or a digit is returned unchanged (`sample_text`, `_private`);
- otherwise every character that is not an ASCII letter or digit is dropped and breaks words
  (so non-ASCII characters vanish), a run of uppercase letters/digits starts a word and is
  lowercased, and words are joined with one `_` (`sampleText` -> `sample_text`,
  `SAMPLE 2 TEXT` -> `sample_2_text`, `___$$Base64Encode` -> `base64_encode`).

On top of it the warehouse contract adds: a name starting with a digit gets a `_` prefix; an
event table whose name collides with a standard table gets a `_` prefix (`_tracks`); a property
or trait whose column would collide with a reserved column keeps its value under a
`_`-prefixed name (`_user_id`) instead of overwriting it.
"""

from __future__ import annotations

import functools

STANDARD_TABLES = frozenset(
    {"tracks", "identifies", "users", "pages", "screens", "groups", "accounts", "aliases"})

# The home table of each call type: every message of the type has one row there.
HOME_TABLE = {
    "track": "tracks", "identify": "identifies", "page": "pages", "screen": "screens",
    "group": "groups", "alias": "aliases",
}

COMMON_COLUMNS = frozenset({
    "id", "anonymous_id", "user_id", "received_at", "sent_at", "timestamp",
    "original_timestamp", "uuid_ts", "channel", "_type_conflicts",
})

# Columns each table has beyond the common ones, filled from the call itself.
CALL_COLUMNS: dict[str, frozenset[str]] = {
    "tracks": frozenset({"event", "event_text"}),
    "pages": frozenset({"name", "category"}),
    "screens": frozenset({"name", "category"}),
    "groups": frozenset({"group_id"}),
    "aliases": frozenset({"previous_id"}),
    "identifies": frozenset(),
}

# users / accounts: one row per id, upserted; no anonymous_id.
PROFILE_COLUMNS = frozenset({"id", "received_at", "uuid_ts", "_type_conflicts"})


def _lower(c: int) -> bool:
    return 97 <= c <= 122


def _upper(c: int) -> bool:
    return 65 <= c <= 90


def _digit(c: int) -> bool:
    return 48 <= c <= 57


@functools.lru_cache(maxsize=65536)
def snakecase(name: str) -> str:
    """go-snakecase's `Snakecase`, on the UTF-8 bytes of `name` (see the module docstring)."""
    s = name.encode("utf-8")
    n = len(s)
    idx = 0
    while idx < n and (_lower(s[idx]) or _digit(s[idx]) or (
            s[idx] == 95 and idx < n - 1 and (_lower(s[idx + 1]) or _digit(s[idx + 1])))):
        idx += 1
    if idx == n:
        return name
    if idx > 0 and _digit(s[idx - 1]):  # a digit followed by an uppercase letter
        idx -= 1
    out = bytearray(s[:idx])
    while idx < n:
        c = s[idx]
        if not (_lower(c) or _upper(c) or _digit(c)):
            idx += 1
            continue
        if out:
            out.append(95)
        while idx < n and (_upper(s[idx]) or _digit(s[idx])):
            out.append(s[idx] + 32 if _upper(s[idx]) else s[idx])
            idx += 1
        while idx < n and (_lower(s[idx]) or _digit(s[idx])):
            out.append(s[idx])
            idx += 1
    return out.decode("ascii")


def identifier(name: str) -> str:
    """A snake_cased name usable as a column or table: `_` prefix when it starts with a digit.

    Returns "" when nothing usable is left (e.g. only symbols or non-ASCII characters).
    """
    snake = snakecase(name)
    if snake and _digit(ord(snake[0])):
        return "_" + snake
    return snake


@functools.lru_cache(maxsize=8192)
def event_table(event: str) -> str:
    """The table of a track event: its slug, `_`-prefixed if it is a standard table's name.

    Returns "" when the event name has no usable characters (the call then only goes to
    `tracks`).
    """
    slug = identifier(event)
    if slug in STANDARD_TABLES or slug == "_violations":  # the tracking plan's table
        return "_" + slug
    return slug


@functools.cache
def reserved_columns(table_kind: str) -> frozenset[str]:
    """Columns a property or trait may not overwrite in a table of this kind.

    `table_kind` is a standard table name; event tables use "tracks". users and accounts take
    the trait columns of identifies and groups, so they use those kinds.
    """
    return COMMON_COLUMNS | CALL_COLUMNS.get(table_kind, frozenset())


def payload_column(name: str, kind: str) -> str:
    """The column of a property or trait named `name` (snake_cased, flattened) in a table of
    this kind: its own name, or `_name` when that is reserved or looks like a context column."""
    if name in reserved_columns(kind) or name.startswith("context_"):
        return "_" + name
    return name


def quote(name: str) -> str:
    """A double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'
