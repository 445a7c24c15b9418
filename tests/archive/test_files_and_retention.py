"""Archive rows, partitions, atomic files and retention."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from trackd.archive import files, retention
from trackd.log.records import Record


def record(offset: int, body: dict[str, object], *, source: str = "web",
           received_at: str = "2026-03-01T10:00:00.123Z", kind: str = "track") -> Record:
    return Record("gw0", offset, source, str(body.get("messageId", offset)), kind, received_at,
                  json.dumps(body).encode())


ROWS = [
    ({"messageId": "a", "userId": "u", "event": "E", "timestamp": "2026-03-01T09:59:59.000Z"},
     {"event": "E", "user_id": "u", "anonymous_id": None,
      "timestamp": datetime(2026, 3, 1, 9, 59, 59, tzinfo=UTC)}),
    ({"messageId": "b", "anonymousId": "x", "userId": 42,
      "timestamp": "2026-03-01T11:59:59.123456+02:00"},
     {"event": None, "user_id": "42", "anonymous_id": "x",
      "timestamp": datetime(2026, 3, 1, 9, 59, 59, 123000, tzinfo=UTC)}),
    ({"messageId": "c", "event": {"not": "a name"}, "timestamp": "yesterday"},
     {"event": None, "user_id": None, "anonymous_id": None, "timestamp": None}),
    ({"messageId": "d", "userId": ["u"], "timestamp": "2026-03-01T09:59:59"},  # no zone
     {"event": None, "user_id": None, "anonymous_id": None, "timestamp": None}),
]


@pytest.mark.parametrize("rows", [ROWS[:2], ROWS], ids=["all-parsed-at-once", "with-misfits"])
def test_table_of(rows: list[tuple[dict[str, object], dict[str, object]]]) -> None:
    table = files.table_of([record(i, body) for i, (body, _) in enumerate(rows)]).to_pylist()
    for row, (body, expected) in zip(table, rows, strict=True):
        assert {k: row[k] for k in expected} == expected
        assert row["received_at"] == datetime(2026, 3, 1, 10, 0, 0, 123000, tzinfo=UTC)
        assert json.loads(row["body"]) == body
        assert row["message_id"] == body["messageId"]


def test_table_of_a_body_that_is_not_an_object_or_not_utf8() -> None:
    records = [Record("gw0", 1, "web", "m1", "track", "2026-03-01T10:00:00.123Z", b"[1, 2]"),
               Record("gw0", 2, "web", "m2", "track", "not a time", b'{"event": "E"}'),
               Record("gw0", 3, "web", "m3", "track", "2026-03-01T10:00:00Z",
                      b'{"event": "bad \xff byte"}')]
    rows = files.table_of(records).to_pylist()
    assert [r["event"] for r in rows] == [None, "E", None]
    assert [r["received_at"] is None for r in rows] == [False, True, False]
    assert rows[0]["body"] == "[1, 2]"
    assert rows[2]["body"] == '{"event": "bad \ufffd byte"}'  # kept, the bad byte replaced


@pytest.mark.parametrize(("received_at", "partition"), [
    ("2026-03-01T23:59:59.999Z", ("web", "2026-03-01")),
    ("2026-03-02T00:00:00.000Z", ("web", "2026-03-02")),
    ("garbage", ("web", "0000-00-00")),
])
def test_partition_of(received_at: str, partition: tuple[str, str]) -> None:
    assert files.partition_of(record(1, {}, received_at=received_at)) == partition


def test_write_file_is_atomic_and_replaces_a_file_of_the_same_name(tmp_path: Path) -> None:
    rows = [record(i, {"messageId": f"m{i}"}) for i in range(3)]
    path = files.write_file(tmp_path, ("web", "2026-03-01"), rows, "part-x")
    assert path == tmp_path / "source=web" / "date=2026-03-01" / "part-x.parquet"
    assert pq.read_table(path).column("message_id").to_pylist() == ["m0", "m1", "m2"]
    files.write_file(tmp_path, ("web", "2026-03-01"), rows[:1], "part-x")
    assert pq.read_table(path).num_rows == 1
    assert [p.name for p in path.parent.iterdir()] == ["part-x.parquet"]
    assert pq.read_schema(path).names == files.SCHEMA.names


@pytest.mark.parametrize(("dates", "days", "gone"), [
    (["2026-03-01", "2026-01-30", "2026-01-29", "2025-03-01"], 30,  # cutoff: 2026-01-30
     ["2025-03-01", "2026-01-29"]),
    (["2026-03-01", "2026-02-28"], 1, []),
    (["2026-03-01", "2026-02-28", "2026-02-27"], 1, ["2026-02-27"]),
    (["2026-03-01", "2026-02-28"], 0, ["2026-02-28"]),
    (["2026-03-01"], 365, []),
])
def test_expired(dates: list[str], days: float, gone: list[str]) -> None:
    assert retention.expired(dates, date(2026, 3, 1), days) == gone


def test_prune_deletes_whole_old_partitions_and_empty_sources(tmp_path: Path) -> None:
    for source, day in [("web", "2026-01-01"), ("web", "2026-02-28"), ("old", "2025-01-01")]:
        files.write_file(tmp_path, (source, day), [record(1, {"messageId": "m"})], "part-1")
    (tmp_path / "source=web" / "not-a-date").mkdir()
    assert retention.prune(tmp_path, date(2026, 3, 1), 30) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source=web"]
    assert sorted(p.name for p in (tmp_path / "source=web").iterdir()) == [
        "date=2026-02-28", "not-a-date"]
    assert retention.prune(tmp_path / "missing", date(2026, 3, 1), 30) == 0
