"""Archive files: log records -> zstd Parquet under `source=<s>/date=YYYY-MM-DD/` (hive layout).

Columns: message_id, type, event, user_id, anonymous_id, received_at, timestamp (timestamps in
UTC, millisecond precision) and body (the stored message as JSON text). `source` and `date`
come from the directory names, so DuckDB's `read_parquet('<archive>/**/*.parquet',
hive_partitioning = true)` and pyarrow datasets (`partitioning="hive"`) both see them.

`write_file` is atomic and durable: the table goes to a hidden temporary name, is fsync'd,
renamed into place, and the directory is fsync'd. Readers never see a partial file (names
starting with `.` are ignored by pyarrow, and DuckDB's glob only matches `*.parquet`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from trackd.log.records import Record

TIMESTAMP = pa.timestamp("ms", tz="UTC")
SCHEMA = pa.schema([
    ("message_id", pa.string()),
    ("type", pa.string()),
    ("event", pa.string()),
    ("user_id", pa.string()),
    ("anonymous_id", pa.string()),
    ("received_at", TIMESTAMP),
    ("timestamp", TIMESTAMP),
    ("body", pa.string()),
])
COMPRESSION = "zstd"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_decode = msgspec.json.Decoder().decode

Partition = tuple[str, str]  # (source, YYYY-MM-DD)


def parse_time(value: Any) -> datetime | None:
    """An ISO-8601 timestamp as an aware datetime, or None."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def partition_of(record: Record) -> Partition:
    """(source, UTC date of receivedAt): where a record is archived."""
    date = record.received_at[:10]
    if not _DATE.match(date):
        moment = parse_time(record.received_at)
        date = moment.date().isoformat() if moment is not None else "0000-00-00"
    return record.source, date


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)


def row_of(record: Record) -> dict[str, Any]:
    try:
        message: Any = _decode(record.body)
    except msgspec.DecodeError:
        message = {}
    if not isinstance(message, dict):
        message = {}
    return {
        "message_id": record.message_id,
        "type": record.type,
        "event": _text(message.get("event")),
        "user_id": _text(message.get("userId")),
        "anonymous_id": _text(message.get("anonymousId")),
        "received_at": parse_time(record.received_at),
        "timestamp": parse_time(message.get("timestamp")),
        "body": record.body.decode("utf-8", "replace"),
    }


def group(records: Iterable[Record]) -> dict[Partition, list[Record]]:
    """Records by partition, each list in log order."""
    out: dict[Partition, list[Record]] = {}
    for record in records:
        out.setdefault(partition_of(record), []).append(record)
    return out


def partition_dir(root: Path, partition: Partition) -> Path:
    source, date = partition
    return root / f"source={source}" / f"date={date}"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(root: Path, partition: Partition, records: list[Record], name: str) -> Path:
    """Write `records` to `<partition>/<name>.parquet`, atomically; replaces a file of that name."""
    directory = partition_dir(root, partition)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([row_of(r) for r in records], schema=SCHEMA)
    final = directory / f"{name}.parquet"
    tmp = directory / f".{name}.parquet.tmp"
    pq.write_table(table, tmp, compression=COMPRESSION)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    fsync_dir(directory)
    if created:
        fsync_dir(directory.parent)
        fsync_dir(directory.parent.parent)
    return final
