"""The archive stage on a real log: Parquet files DuckDB reads, flushes, crash recovery, trim."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from tests.conftest import eventually
from tests.destinations.harness import LogHarness, message
from trackd.archive import archive_dir, build_archive, files
from trackd.archive.stage import CONSUMER, INTENT, ArchiveStage
from trackd.settings import ArchiveSettings, Settings

DAY1 = datetime(2026, 3, 1, 23, 59, 59, 500000, tzinfo=UTC)
DAY2 = datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC)


def stage_for(h: LogHarness, **settings: Any) -> ArchiveStage:
    config = {"flush_interval": 0.05, **settings}
    return ArchiveStage(ArchiveSettings(**config), h.reader, archive_dir(h.root), h.metrics,
                        clock=lambda: DAY2.timestamp() + 3600, poll_interval=0.02)


def query(root: Path, sql: str) -> list[tuple[Any, ...]]:
    glob = str(root / "**" / "*.parquet")
    with duckdb.connect() as conn:
        return conn.execute(sql.replace(
            "archive", f"read_parquet('{glob}', hive_partitioning = true)")).fetchall()


def archived_ids(root: Path) -> list[str]:
    return [r[0] for r in query(root, "SELECT message_id FROM archive ORDER BY message_id")]


def caught_up(h: LogHarness) -> bool:
    return h.reader.lag(CONSUMER) == 0


def test_files_are_zstd_parquet_partitioned_by_source_and_date_readable_by_duckdb(
        harness: LogHarness) -> None:
    harness.start(stage_for(harness))
    first = message("u1", 1, event="Signed Up", received=DAY1, anonymousId="a1")
    second = message(None, 2, kind="identify", received=DAY2, anonymousId="a2",
                     traits={"plan": "pro"})
    third = message("u3", 3, received=DAY2)
    harness.append([first, second])
    harness.append([third], source="backend")
    eventually(lambda: caught_up(harness))
    root = archive_dir(harness.root)
    rows = query(root, "SELECT source, CAST(date AS VARCHAR), message_id, type, event, user_id, "
                       "anonymous_id, received_at, timestamp, body FROM archive")
    assert sorted(r[:7] for r in rows) == sorted([
        ("web", "2026-03-01", first["messageId"], "track", "Signed Up", "u1", "a1"),
        ("web", "2026-03-02", second["messageId"], "identify", None, None, "a2"),
        ("backend", "2026-03-02", third["messageId"], "track", "Clicked", "u3", None),
    ])
    by_id = {r[2]: r for r in rows}
    assert by_id[first["messageId"]][7] == DAY1.replace(microsecond=500000)
    assert json.loads(by_id[second["messageId"]][9]) == second
    paths = sorted(p.relative_to(root).parts[:2] for p in root.rglob("*.parquet"))
    assert paths == [("source=backend", "date=2026-03-02"), ("source=web", "date=2026-03-01"),
                     ("source=web", "date=2026-03-02")]
    some_file = next(root.rglob("*.parquet"))
    metadata = pq.ParquetFile(some_file).metadata
    assert metadata.row_group(0).column(0).compression == "ZSTD"
    assert not list(root.rglob(".*")) and not (root / INTENT).exists()


def test_flush_rows_closes_a_file_before_the_interval(harness: LogHarness) -> None:
    stage = harness.start(stage_for(harness, flush_interval=3600.0, flush_rows=10))
    sent = harness.append([message("u", n, received=DAY1) for n in range(25)])
    root = archive_dir(harness.root)
    eventually(lambda: len(list(root.rglob("*.parquet"))) == 2)
    assert len(archived_ids(root)) == 20
    assert harness.reader.position(CONSUMER)["gw0"] == 20  # committed after the files
    harness.stop(stage)  # stopping writes what is buffered
    assert archived_ids(root) == sorted(sent)
    assert harness.reader.lag(CONSUMER) == 0


def test_an_interrupted_flush_is_finished_exactly_once(harness: LogHarness) -> None:
    sent = harness.append([message("u", n, received=DAY1 + timedelta(days=n % 2))
                           for n in range(6)])
    records = harness.reader.read(CONSUMER, 100)
    end = harness.reader.heads()
    root = archive_dir(harness.root)
    root.mkdir(parents=True)
    # the crash: intent written, one partition file written with some rows, offset not moved
    (root / INTENT).write_text(json.dumps({"id": "crashed", "start": {}, "end": end}))
    day1 = [r for r in records if files.partition_of(r) == ("web", "2026-03-01")]
    files.write_file(root, ("web", "2026-03-01"), day1[:2], "part-crashed")
    later = harness.append([message("u", 99, received=DAY2)])  # arrived after the crash
    harness.start(stage_for(harness))
    eventually(lambda: caught_up(harness))
    assert archived_ids(root) == sorted(sent + later)  # each once
    assert not (root / INTENT).exists()
    assert len(list((root / "source=web" / "date=2026-03-01").glob("part-crashed*"))) == 1


def test_an_intent_already_committed_is_just_removed(harness: LogHarness) -> None:
    harness.append([message("u", 0, received=DAY1)])
    end = harness.reader.heads()
    harness.reader.commit(CONSUMER, end)
    root = archive_dir(harness.root)
    root.mkdir(parents=True)
    (root / INTENT).write_text(json.dumps({"id": "done", "start": {}, "end": end}))
    stage = harness.start(stage_for(harness))
    assert not (root / INTENT).exists()
    harness.stop(stage)
    assert not list(root.rglob("*.parquet"))


def test_the_log_can_be_trimmed_once_archived(harness: LogHarness) -> None:
    stage = build_archive(Settings(archive=ArchiveSettings(flush_interval=0.05)),
                          harness.reader, harness.metrics, harness.root)
    assert stage is not None and stage.name == "archive"
    assert harness.reader.consumers() == ["archive"]
    harness.start(stage)
    sent = harness.append([message("u", n) for n in range(5)])
    eventually(lambda: caught_up(harness))
    assert harness.reader.trim() == 5
    assert harness.reader.read("someone-new", 100, {}) == []
    assert archived_ids(archive_dir(harness.root)) == sorted(sent)


def test_a_disabled_archive_builds_no_stage(harness: LogHarness) -> None:
    settings = Settings(archive=ArchiveSettings(enabled=False))
    assert build_archive(settings, harness.reader, harness.metrics, harness.root) is None
    assert harness.reader.consumers() == []


def test_retention_runs_at_start(harness: LogHarness) -> None:
    root = archive_dir(harness.root)
    old = [message("u", 0, received=DAY2 - timedelta(days=40))]
    recent = [message("u", 1, received=DAY2 - timedelta(days=2))]
    harness.append(old + recent)
    stage = harness.start(stage_for(harness))
    eventually(lambda: caught_up(harness))
    harness.stop(stage)
    assert len(archived_ids(root)) == 2
    harness.start(stage_for(harness, retention_days=30))  # clock: DAY2 + 1h
    assert archived_ids(root) == [recent[0]["messageId"]]
