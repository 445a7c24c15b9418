"""ArchiveScan: filters, receivedAt order, each message once."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from trackd.archive import files
from trackd.archive.reader import ArchiveScan
from trackd.log.records import Record


def rec(mid: str, received_at: str, *, source: str = "web", event: str = "E",
        user: str = "u") -> Record:
    body = {"messageId": mid, "type": "track", "event": event, "userId": user,
            "receivedAt": received_at}
    return Record("gw0", 1, source, mid, "track", received_at, json.dumps(body).encode())


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    # two flushes; the second holds a repeat of m2 (as a crash could leave) and an earlier row
    files.write_file(tmp_path, ("web", "2026-03-01"), [
        rec("m1", "2026-03-01T10:00:00.000Z"), rec("m2", "2026-03-01T12:00:00.000Z", event="F"),
    ], "part-1")
    files.write_file(tmp_path, ("web", "2026-03-01"), [
        rec("m0", "2026-03-01T09:00:00.000Z"), rec("m2", "2026-03-01T12:00:00.000Z", event="F"),
    ], "part-2")
    files.write_file(tmp_path, ("backend", "2026-03-01"), [
        rec("b1", "2026-03-01T11:00:00.000Z", source="backend"),
    ], "part-1")
    files.write_file(tmp_path, ("web", "2026-03-02"), [
        rec("m3", "2026-03-02T08:00:00.000Z"),
    ], "part-3")
    return tmp_path


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("filters", "expected"), [
    ({}, ["m0", "m1", "b1", "m2", "m3"]),
    ({"source": "web"}, ["m0", "m1", "m2", "m3"]),
    ({"source": "backend"}, ["b1"]),
    ({"event": "F"}, ["m2"]),
    ({"since": at("2026-03-01T10:00:00")}, ["m1", "b1", "m2", "m3"]),
    ({"until": at("2026-03-01T11:00:00")}, ["m0", "m1"]),
    ({"since": at("2026-03-01T11:30:00"), "until": at("2026-03-02T00:00:00")}, ["m2"]),
    ({"since": at("2026-03-03T00:00:00")}, []),
    ({"source": "nope"}, []),
])
def test_scan(archive: Path, filters: dict[str, object], expected: list[str]) -> None:
    scan = ArchiveScan(archive, **filters)  # type: ignore[arg-type]
    assert [m.message_id for m in scan] == expected
    assert scan.count() >= len(expected)


def test_scan_yields_source_and_the_stored_body(archive: Path) -> None:
    [m] = list(ArchiveScan(archive, source="backend"))
    assert m.source == "backend" and json.loads(m.body)["messageId"] == "b1"
    assert m.received_at == datetime(2026, 3, 1, 11, tzinfo=UTC)


def test_a_missing_archive_is_empty(tmp_path: Path) -> None:
    scan = ArchiveScan(tmp_path / "nothing")
    assert list(scan) == [] and scan.count() == 0
