"""Reading the archive back (for replay): filtered, ordered by receivedAt, without repeats.

`ArchiveScan(root, source=..., since=..., until=..., event=...)` walks the `date=` partitions
that can hold matching messages, oldest day first; within a day it yields messages in
receivedAt order (so a user's messages keep their order), each (source, messageId) once.
Memory holds one day of matching rows at a time. Works whether or not a server is writing:
files appear atomically.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from trackd.archive.files import TIMESTAMP

_SOURCE_DIR = re.compile(r"^source=(.+)$")
_DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_COLUMNS = ["message_id", "received_at", "body"]


@dataclass(frozen=True, slots=True)
class Archived:
    source: str
    message_id: str
    received_at: datetime
    body: bytes


class ArchiveScan:
    def __init__(self, root: Path, *, source: str | None = None,
                 since: datetime | None = None, until: datetime | None = None,
                 event: str | None = None) -> None:
        self.root = root
        self.source = source
        self.since = since
        self.until = until
        self.event = event

    def _filter(self) -> Any:
        expr: Any = None
        conditions = []
        if self.since is not None:
            conditions.append(ds.field("received_at") >= pa.scalar(self.since, TIMESTAMP))
        if self.until is not None:
            conditions.append(ds.field("received_at") < pa.scalar(self.until, TIMESTAMP))
        if self.event is not None:
            conditions.append(ds.field("event") == self.event)
        for condition in conditions:
            expr = condition if expr is None else expr & condition
        return expr

    def partitions(self) -> dict[str, list[tuple[str, list[str]]]]:
        """date -> [(source, parquet files)] for the partitions the bounds can match."""
        out: dict[str, list[tuple[str, list[str]]]] = {}
        if not self.root.is_dir():
            return out
        low = self.since.date().isoformat() if self.since is not None else None
        high = self.until.date().isoformat() if self.until is not None else None
        for source_dir in sorted(self.root.iterdir()):
            m = _SOURCE_DIR.match(source_dir.name)
            if m is None or not source_dir.is_dir():
                continue
            source = m.group(1)
            if self.source is not None and source != self.source:
                continue
            for date_dir in sorted(source_dir.iterdir()):
                d = _DATE_DIR.match(date_dir.name)
                if d is None or (low and d.group(1) < low) or (high and d.group(1) > high):
                    continue
                paths = sorted(str(p) for p in date_dir.glob("*.parquet"))
                if paths:
                    out.setdefault(d.group(1), []).append((source, paths))
        return dict(sorted(out.items()))

    def count(self) -> int:
        """Matching rows (repeats included): the length of a progress bar."""
        expr = self._filter()
        return sum(ds.dataset(paths, format="parquet").count_rows(filter=expr)
                   for groups in self.partitions().values() for _, paths in groups)

    def __iter__(self) -> Iterator[Archived]:
        expr = self._filter()
        seen: set[tuple[str, str]] = set()
        for groups in self.partitions().values():
            tables = []
            for source, paths in groups:
                table = ds.dataset(paths, format="parquet").to_table(columns=_COLUMNS,
                                                                     filter=expr)
                tables.append(table.append_column(
                    "source", pa.array([source] * table.num_rows, pa.string())))
            day = pa.concat_tables(tables)
            if day.num_rows == 0:
                continue
            order = pc.sort_indices(day, sort_keys=[("received_at", "ascending")])
            for row in day.take(order).to_pylist():
                key = (row["source"], row["message_id"])
                if key in seen:
                    continue
                seen.add(key)
                yield Archived(row["source"], row["message_id"], row["received_at"],
                               row["body"].encode())
