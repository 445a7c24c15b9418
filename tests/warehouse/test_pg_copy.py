"""COPY of Arrow tables into PostgreSQL (`copy_arrow`): binary COPY for the warehouse's types,
CSV for the rest; values read back from the machine's server, each test in its own database."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from tests.warehouse import pg
from trackd.warehouse.postgres import copying
from trackd.warehouse.postgres.connect import connect
from trackd.warehouse.postgres.copying import copy_arrow, copy_csv

COLUMNS = {"t": "text", "v": "varchar(200)", "big": "bigint", "small": "integer",
           "f": "double precision", "b": "boolean", "ts": "timestamp", "tz": "timestamptz",
           "jb": "jsonb", "js": "json", "tags": "text[]", "Mixed Case": "text"}
TABLE = pa.table({
    "t": pa.array(["plain", None, "", "ünïcødé ✓ 漢字 🎉", "quote \" comma , \\ nl\n"]),
    "v": pa.array(["a", "", None, "é", "x" * 150]),
    "big": pa.array([0, None, 2**63 - 1, -(2**63), -42], pa.int64()),
    "small": pa.array([2**31 - 1, -(2**31), None, 0, 7], pa.int64()),
    "f": pa.array([1.5, float("inf"), float("-inf"), None, -1e-300]),
    "b": pa.array([True, False, None, True, False]),
    "ts": pa.array([datetime(1970, 1, 1), datetime(1899, 12, 31, 23, 59, 59, 999999),
                    datetime(2000, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999), None],
                   pa.timestamp("us")),
    "tz": pa.array([datetime(1999, 12, 31, 23, 59, 59, 1), None,
                    datetime(2038, 1, 19, 3, 14, 8), datetime(1, 1, 1),
                    datetime(2024, 5, 1, 10, 0, 0, 123456)], pa.timestamp("us")),
    "jb": pa.array(['{"a": 1, "b": [true, null]}', "[1, 2.5, \"x\"]", '"just a string"', None,
                    '{"ü": "✓"}']),
    "js": pa.array(['{"keep":  "spacing"}', None, "[]", "3", '"s"']),
    "tags": pa.array([["tracks", "order_completed"], [], None, ["with \"quote\"", "back\\slash",
                                                               "comma,brace}"], ["é"]],
                     pa.list_(pa.string())),
    "Mixed Case": pa.array(["m", None, "", "n", "o"]),
})
EXPECTED: list[tuple[Any, ...]] = [
    ("plain", "a", 0, 2**31 - 1, 1.5, True, datetime(1970, 1, 1),
     datetime(1999, 12, 31, 23, 59, 59, 1, tzinfo=UTC), {"a": 1, "b": [True, None]},
     {"keep": "spacing"}, ["tracks", "order_completed"], "m"),
    (None, "", None, -(2**31), math.inf, False, datetime(1899, 12, 31, 23, 59, 59, 999999),
     None, [1, 2.5, "x"], None, [], None),
    ("", None, 2**63 - 1, None, -math.inf, None, datetime(2000, 1, 1),
     datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC), "just a string", [], None, ""),
    ("ünïcødé ✓ 漢字 🎉", "é", -(2**63), 0, None, True, datetime(9999, 12, 31, 23, 59, 59, 999999),
     datetime(1, 1, 1, tzinfo=UTC), None, 3, ["with \"quote\"", "back\\slash", "comma,brace}"],
     "n"),
    ("quote \" comma , \\ nl\n", "x" * 150, -42, 7, -1e-300, False, None,
     datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC), {"ü": "✓"}, "s", ["é"], "o"),
]


@pytest.fixture
def con() -> Iterator[psycopg.Connection[Any]]:
    with pg.database() as url, connect(url, autocommit=True) as made:
        yield made


def make(con: psycopg.Connection[Any], name: str, columns: dict[str, str]) -> str:
    body = ", ".join(f'"{column}" {kind}' for column, kind in columns.items())
    con.execute(f'CREATE TABLE "{name}" (n serial, {body})')
    return f'"{name}"'


def read(con: psycopg.Connection[Any], target: str, columns: list[str]) -> list[tuple[Any, ...]]:
    listed = ", ".join(f'"{c}"' for c in columns)
    return [tuple(r) for r in con.execute(f"SELECT {listed} FROM {target} ORDER BY n")]


@pytest.fixture
def binary_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails the test if a table goes as CSV (the encoder refused one of its columns)."""
    def refuse(*_: Any) -> None:
        raise AssertionError("copied as CSV, not binary")
    monkeypatch.setattr(copying, "copy_csv", refuse)


@pytest.mark.usefixtures("binary_only")
def test_every_warehouse_type_round_trips_through_binary_copy(
        con: psycopg.Connection[Any]) -> None:
    target = make(con, "everything", COLUMNS)
    copy_arrow(con, target, TABLE)
    assert read(con, target, list(COLUMNS)) == EXPECTED


@pytest.mark.usefixtures("binary_only")
def test_nan_and_negative_zero_keep_their_value(con: psycopg.Connection[Any]) -> None:
    target = make(con, "floats", {"f": "double precision"})
    copy_arrow(con, target, pa.table({"f": pa.array([math.nan, -0.0])}))
    got = [row[0] for row in read(con, target, ["f"])]
    assert math.isnan(got[0]) and got[1] == 0.0 and math.copysign(1, got[1]) == -1


def test_binary_and_csv_copies_load_the_same_rows(con: psycopg.Connection[Any]) -> None:
    as_binary, as_csv = make(con, "binary", COLUMNS), make(con, "csv", COLUMNS)
    copy_arrow(con, as_binary, TABLE)
    copy_csv(con, as_csv, TABLE)
    assert read(con, as_binary, list(COLUMNS)) == read(con, as_csv, list(COLUMNS))


@pytest.mark.usefixtures("binary_only")
def test_nul_characters_are_removed_from_text_and_json(con: psycopg.Connection[Any]) -> None:
    target = make(con, "nul", {"t": "text", "jb": "jsonb"})
    copy_arrow(con, target, pa.table({"t": ["a\x00b", "fine"],
                                      "jb": ['{"k": "x\\u0000y"}', '{"k": "\\u00e9"}']}))
    assert read(con, target, ["t", "jb"]) == [("ab", {"k": "xy"}), ("fine", {"k": "é"})]


@pytest.mark.usefixtures("binary_only")
def test_many_rows_in_several_chunks_keep_their_order_and_nulls(
        con: psycopg.Connection[Any]) -> None:
    # more rows than one encoded slice, in chunks that start mid-bitmap
    count = 40_003
    ids = pa.array(range(count), pa.int64())
    names = pa.array([None if i % 3 == 0 else f"name-{i}" for i in range(count)])
    table = pa.Table.from_batches([
        pa.record_batch([ids.slice(start, size), names.slice(start, size)], names=["i", "s"])
        for start, size in ((0, 5), (5, 20_000), (20_005, 19_998))])
    target = make(con, "many", {"i": "bigint", "s": "text"})
    copy_arrow(con, target, table)
    assert read(con, target, ["i", "s"]) == [
        (i, None if i % 3 == 0 else f"name-{i}") for i in range(count)]


@pytest.mark.usefixtures("binary_only")
def test_a_null_value_with_bytes_under_it_stays_null(con: psycopg.Connection[Any]) -> None:
    # Arrow allows a NULL slot to span bytes or elements; they must not reach the next field
    offsets = pa.array([0, 3, 6, 9], pa.int32()).buffers()[1]
    validity = pa.array([True, False, True]).buffers()[1]
    strings = pa.Array.from_buffers(pa.string(), 3, [validity, offsets, pa.py_buffer(b"abcdefghi")])
    lists = pa.Array.from_buffers(pa.list_(pa.string()), 3, [validity, offsets],
                                  children=[pa.array(list("abcdefghi"))])
    target = make(con, "slots", {"s": "text", "l": "text[]", "after": "text"})
    copy_arrow(con, target, pa.table({"s": strings, "l": lists, "after": ["x", "y", "z"]}))
    assert read(con, target, ["s", "l", "after"]) == [
        ("abc", ["a", "b", "c"], "x"), (None, None, "y"), ("ghi", ["g", "h", "i"], "z")]


def test_a_column_the_encoder_does_not_take_sends_the_table_as_csv(
        con: psycopg.Connection[Any]) -> None:
    target = make(con, "other", {"amount": "numeric", "day": "date", "name": "text"})
    copy_arrow(con, target, pa.table({"amount": ["1.50", None], "day": ["2024-05-01", None],
                                      "name": ["a", None]}))
    rows = con.execute(f"SELECT amount::text, day::text, name FROM {target} ORDER BY n")
    assert [tuple(r) for r in rows] == [("1.50", "2024-05-01", "a"), (None, None, None)]


def test_an_integer_too_big_for_its_column_is_refused_as_before(
        con: psycopg.Connection[Any]) -> None:
    target = make(con, "small", {"small": "integer"})
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        copy_arrow(con, target, pa.table({"small": pa.array([2**31], pa.int64())}))


@pytest.mark.usefixtures("binary_only")
def test_the_types_read_once_follow_a_column_added_and_a_table_recreated(
        con: psycopg.Connection[Any]) -> None:
    target = make(con, "moving", {"a": "text"})
    copy_arrow(con, target, pa.table({"a": ["x"]}))
    con.execute(f"ALTER TABLE {target} ADD COLUMN b bigint")  # a new column: read again
    copy_arrow(con, target, pa.table({"a": ["y"], "b": pa.array([2], pa.int64())}))
    con.execute(f"DROP TABLE {target}")  # the same names, other types: the COPY fails once
    target = make(con, "moving", {"a": "text", "b": "integer"})
    with pytest.raises(psycopg.Error):
        copy_arrow(con, target, pa.table({"a": ["z"], "b": pa.array([3], pa.int64())}))
    copy_arrow(con, target, pa.table({"a": ["z"], "b": pa.array([3], pa.int64())}))
    assert read(con, target, ["a", "b"]) == [("z", 3)]


@pytest.mark.usefixtures("binary_only")
def test_a_staging_table_takes_the_types_of_the_table_it_is_like(
        con: psycopg.Connection[Any]) -> None:
    # The store reuses staging names for different tables in turn.
    for name, kind, value in [("ints", "bigint", 5), ("texts", "text", "five")]:
        target = f'"{name}"'
        con.execute(f"CREATE TABLE {target} (v {kind})")
        with con.transaction():
            con.execute(f"CREATE TEMP TABLE stage (LIKE {target}) ON COMMIT DROP")
            copy_arrow(con, "stage", pa.table({"v": [value]}), like=target)
            con.execute(f"INSERT INTO {target} (v) SELECT v FROM stage")
        assert [tuple(r) for r in con.execute(f"SELECT v FROM {target}")] == [(value,)]
