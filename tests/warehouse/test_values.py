"""Type inference and casting of JSON values into warehouse columns."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from trackd.warehouse.values import CONFLICT, ColumnType, convert, infer, parse_timestamp, text


@pytest.mark.parametrize(("value", "expected"), [
    (True, ColumnType.BOOLEAN),
    (False, ColumnType.BOOLEAN),
    (0, ColumnType.BIGINT),
    (-(2**63), ColumnType.BIGINT),
    (2**63 - 1, ColumnType.BIGINT),
    (2**63, ColumnType.DOUBLE),
    (10**30, ColumnType.DOUBLE),
    (1.5, ColumnType.DOUBLE),
    (10.0, ColumnType.DOUBLE),
    ("2024-05-01T10:00:00.000Z", ColumnType.TIMESTAMP),
    ("2024-05-01T10:00:00+02:00", ColumnType.TIMESTAMP),
    ("2024-05-01 10:00", ColumnType.TIMESTAMP),
    ("2024-05-01", ColumnType.TIMESTAMP),
    ("2024-13-45", ColumnType.VARCHAR),
    ("20240501", ColumnType.VARCHAR),
    ("May 1st", ColumnType.VARCHAR),
    ("42", ColumnType.VARCHAR),
    ("", ColumnType.VARCHAR),
    ([1, 2], ColumnType.VARCHAR),
])
def test_the_first_value_fixes_the_type(value: Any, expected: ColumnType) -> None:
    assert infer(value) == expected


@pytest.mark.parametrize(("value", "column", "expected"), [
    # Casts that lose nothing.
    (3.0, "BIGINT", 3),
    ("42", "BIGINT", 42),
    (7, "DOUBLE", 7.0),
    ("2.5", "DOUBLE", 2.5),
    ("1e3", "DOUBLE", 1000.0),
    ("TRUE", "BOOLEAN", True),
    ("false", "BOOLEAN", False),
    (12, "VARCHAR", "12"),
    (1.5, "VARCHAR", "1.5"),
    (True, "VARCHAR", "true"),
    (["a", 1], "VARCHAR", '["a",1]'),
    ("2024-05-01T12:00:00+02:00", "TIMESTAMP", datetime(2024, 5, 1, 10, 0)),
    ("2024-05-01T10:00:00.123456789Z", "TIMESTAMP", datetime(2024, 5, 1, 10, 0, 0, 123456)),
    # Conflicts: kept as text in _type_conflicts.
    (3.5, "BIGINT", CONFLICT),
    ("abc", "BIGINT", CONFLICT),
    (True, "BIGINT", CONFLICT),
    (2**63, "BIGINT", CONFLICT),
    ("abc", "DOUBLE", CONFLICT),
    (False, "DOUBLE", CONFLICT),
    (10**400, "DOUBLE", CONFLICT),
    (1, "BOOLEAN", CONFLICT),
    ("yes", "BOOLEAN", CONFLICT),
    ("tomorrow", "TIMESTAMP", CONFLICT),
    (1714557600, "TIMESTAMP", CONFLICT),
    ("x", "INTEGER[]", CONFLICT),  # a type changed by hand: never guessed at
])
def test_later_values_are_cast_or_conflict(value: Any, column: str, expected: Any) -> None:
    assert convert(value, column) == expected


def test_conflict_text_is_the_string_or_the_json() -> None:
    assert text("abc") == "abc"
    assert text(3.5) == "3.5"
    assert text({"a": [1, None]}) == '{"a":[1,null]}'


def test_timestamps_are_naive_utc() -> None:
    assert parse_timestamp("2024-05-01T10:00:00-05:00") == datetime(2024, 5, 1, 15, 0)
    assert parse_timestamp("2024-05-01") == datetime(2024, 5, 1)
    assert parse_timestamp("not a time at all") is None
