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
from trackd.private import fsync_path

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


class _Indexed(msgspec.Struct):
    """The fields of a message the archive indexes; msgspec skips the rest without building it
    (several times faster than decoding the whole message into dicts)."""

    event: Any = None
    userId: Any = None  # noqa: N815 - wire names
    anonymousId: Any = None  # noqa: N815
    timestamp: Any = None


_EMPTY = _Indexed()
_decode_indexed = msgspec.json.Decoder(_Indexed).decode


def _fields(body: bytes) -> _Indexed:
    try:
        return _decode_indexed(body)
    except (msgspec.DecodeError, msgspec.ValidationError):  # not a JSON object
        return _EMPTY


def _times(values: list[Any]) -> pa.Array:
    """ISO-8601 strings (anything else: null) as UTC millisecond timestamps.

    Arrow parses the column at once when every string has a zone (what trackd stores);
    otherwise each value goes through `parse_time`, and a value without a zone is null.
    """
    strings = [v if isinstance(v, str) else None for v in values]
    try:
        micros = pa.array(strings, pa.string()).cast(pa.timestamp("us", tz="UTC"))
        return micros.cast(TIMESTAMP, safe=False)  # drops sub-millisecond digits
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([parse_time(v) for v in strings], TIMESTAMP)


def _bodies(records: list[Record]) -> pa.Array:
    raw = pa.array([r.body for r in records], pa.binary())
    try:
        return raw.cast(pa.string())  # checks UTF-8, which every message trackd stores is
    except pa.ArrowInvalid:
        return pa.array([r.body.decode("utf-8", "replace") for r in records], pa.string())


def table_of(records: list[Record]) -> pa.Table:
    """The archive table of `records`, built column by column."""
    indexed = [_fields(r.body) for r in records]
    return pa.Table.from_arrays([
        pa.array([r.message_id for r in records], pa.string()),
        pa.array([r.type for r in records], pa.string()),
        pa.array([_text(f.event) for f in indexed], pa.string()),
        pa.array([_text(f.userId) for f in indexed], pa.string()),
        pa.array([_text(f.anonymousId) for f in indexed], pa.string()),
        _times([r.received_at for r in records]),
        _times([f.timestamp for f in indexed]),
        _bodies(records),
    ], schema=SCHEMA)


def group(records: Iterable[Record]) -> dict[Partition, list[Record]]:
    """Records by partition, each list in log order."""
    out: dict[Partition, list[Record]] = {}
    for record in records:
        out.setdefault(partition_of(record), []).append(record)
    return out


def partition_dir(root: Path, partition: Partition) -> Path:
    source, date = partition
    return root / f"source={source}" / f"date={date}"





def write_file(root: Path, partition: Partition, records: list[Record], name: str) -> Path:
    """Write `records` to `<partition>/<name>.parquet`, atomically; replaces a file of that name."""
    directory = partition_dir(root, partition)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{name}.parquet"
    replace_with(final, table_of(records))
    if created:
        fsync_path(directory.parent)
        fsync_path(directory.parent.parent)
    return final


def replace_with(final: Path, table: pa.Table) -> None:
    """Write `table` to a hidden name beside `final`, fsync it, rename it over `final`, and
    fsync the directory: `final` is the old file or the new one, whole, whatever happens."""
    tmp = final.with_name(f".{final.name}.tmp")
    pq.write_table(table, tmp, compression=COMPRESSION)
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_path(final.parent)
