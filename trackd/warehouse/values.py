"""Column types: what a JSON value's type is, and how a value fits a column of a given type.

The first non-null value seen fixes a column's type (`infer`):

| JSON value                         | column type |
|------------------------------------|-------------|
| true / false                       | BOOLEAN     |
| integer literal within int64       | BIGINT      |
| integer literal beyond int64       | DOUBLE      |
| number with a fraction or exponent | DOUBLE      |
| ISO-8601 date or date-time string  | TIMESTAMP (UTC; a string without zone is taken as UTC) |
| any other string                   | VARCHAR     |
| array                              | VARCHAR (its JSON text) |

A later value is cast to the column's type when that loses nothing (`convert`): an integral
double into BIGINT, an integer into DOUBLE, "42" into BIGINT, "true" into BOOLEAN, anything into
VARCHAR (numbers and arrays as JSON text). Otherwise `convert` returns `CONFLICT` and the loader
keeps the value's text (`text`) in the row's `_type_conflicts` JSON column.
"""

from __future__ import annotations

import enum
import functools
import math
import re
from datetime import UTC, datetime
from typing import Any, Final

import msgspec


class ColumnType(enum.StrEnum):
    """A warehouse column type, spelled as DuckDB's information_schema spells it."""

    VARCHAR = "VARCHAR"
    BIGINT = "BIGINT"
    DOUBLE = "DOUBLE"
    BOOLEAN = "BOOLEAN"
    TIMESTAMP = "TIMESTAMP"
    JSON = "JSON"


class _Conflict:
    __slots__ = ()

    def __repr__(self) -> str:
        return "CONFLICT"


CONFLICT: Final = _Conflict()
"""Returned by `convert` when a value does not fit the column's type."""

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# The patterns are shared with the SQL the loader generates (`sql.py`): RE2 accepts them too.
ISO_PATTERN = (r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.(\d+))?)?"
               r"(?:Z|z|[+-]\d{2}(?::?\d{2})?)?)?")
INTEGER_PATTERN = r"[+-]?\d{1,19}"
NUMBER_PATTERN = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_ISO = re.compile(ISO_PATTERN)
_INTEGER = re.compile(INTEGER_PATTERN)
_NUMBER = re.compile(NUMBER_PATTERN)
_encode = msgspec.json.encode


@functools.lru_cache(maxsize=16384)  # messages of one request share receivedAt and sentAt
def parse_timestamp(value: str) -> datetime | None:
    """An ISO-8601 date or date-time string as a naive UTC datetime; None if it is not one.

    Dates are midnight UTC; date-times without a zone are taken as UTC; fractions beyond
    microseconds are truncated.
    """
    if not 10 <= len(value) <= 40 or not value[0].isdigit() or value[4] != "-":
        return None
    match = _ISO.fullmatch(value)
    if match is None:
        return None
    fraction = match.group(1)
    if fraction is not None and len(fraction) > 6:
        start = match.start(1)
        value = value[: start + 6] + value[start + len(fraction):]
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    offset = parsed.utcoffset()
    if offset is not None and not offset:
        return parsed.replace(tzinfo=None)
    if offset is not None:
        try:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            return None
    return parsed


def infer(value: Any) -> ColumnType:
    """The type a new column gets from its first non-null value (see the module table)."""
    if isinstance(value, bool):
        return ColumnType.BOOLEAN
    if isinstance(value, int):
        return ColumnType.BIGINT if INT64_MIN <= value <= INT64_MAX else ColumnType.DOUBLE
    if isinstance(value, float):
        return ColumnType.DOUBLE
    if isinstance(value, datetime):
        return ColumnType.TIMESTAMP
    if isinstance(value, str) and parse_timestamp(value) is not None:
        return ColumnType.TIMESTAMP
    return ColumnType.VARCHAR


def text(value: Any) -> str:
    """A value as text: strings as they are, everything else as its JSON."""
    if isinstance(value, str):
        return value
    return _encode(value).decode()


def convert(value: Any, column: str) -> Any:
    """`value` (not None) as a Python value of column type `column`, or `CONFLICT`."""
    if type(value) is str and column == ColumnType.VARCHAR:  # the common case, first
        return value
    if column == ColumnType.VARCHAR or column == ColumnType.JSON:
        return text(value)
    if column == ColumnType.BIGINT:
        return _to_bigint(value)
    if column == ColumnType.DOUBLE:
        return _to_double(value)
    if column == ColumnType.BOOLEAN:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return CONFLICT
    if column == ColumnType.TIMESTAMP:
        if isinstance(value, datetime):
            return value
        if isinstance(value, str):
            parsed = parse_timestamp(value)
            if parsed is not None:
                return parsed
        return CONFLICT
    return CONFLICT  # a type trackd does not create (changed by hand): keep the text


def _to_bigint(value: Any) -> Any:
    if isinstance(value, bool):
        return CONFLICT
    if isinstance(value, float):
        if not value.is_integer():
            return CONFLICT
        value = int(value)
    elif isinstance(value, str):
        if _INTEGER.fullmatch(value) is None:
            return CONFLICT
        value = int(value)
    if isinstance(value, int) and INT64_MIN <= value <= INT64_MAX:
        return value
    return CONFLICT


def _to_double(value: Any) -> Any:
    if isinstance(value, bool):
        return CONFLICT
    if not isinstance(value, int | float) and not (
            isinstance(value, str) and _NUMBER.fullmatch(value) is not None):
        return CONFLICT
    try:
        result = float(value)
    except OverflowError:  # an integer beyond the range of a double
        return CONFLICT
    return result if math.isfinite(result) else CONFLICT
