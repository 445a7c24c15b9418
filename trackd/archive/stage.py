"""processed log -> Parquet archive: the consumer `archive`.

Every accepted message is kept, date-partitioned, under `<data_dir>/archive/` (see `files`),
so the log itself can be trimmed once every consumer has passed, and `trackd replay` can send
old messages again.

The stage buffers records in memory and writes them out every `flush_interval` seconds, or
sooner at `flush_rows` rows (or 64 MiB of bodies). A flush is:

1. an intent `_flush.json` naming the flush and its log range (start, end], fsync'd;
2. one file per (source, date) partition, `part-<flush id>.parquet`, each fsync'd and renamed;
3. the log offset committed to `end`; 4. the intent removed.

After a crash between 1 and 4 the next start re-reads exactly (start, end] and writes the same
file names again, which replaces whatever part was written: no message is lost and none is
archived twice. Retention runs at start and hourly.

On the NATS log (a shared consumer, no position to re-read) step 3 is the acknowledgement of
the flushed records, after step 4: a crash before it has them delivered again and archived in
a later file, so there the archive holds every message at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from trackd.archive import files, retention
from trackd.log.choice import as_source, reader_of
from trackd.log.protocol import LogConsumer, LogSource
from trackd.log.reader import LogReader
from trackd.log.records import Position, Record, advanced
from trackd.observability import Registry, get_logger
from trackd.private import fsync_path
from trackd.settings import ArchiveSettings

log = get_logger("archive")
CONSUMER = "archive"
INTENT = "_flush.json"
READ_CHUNK = 5000
MAX_BUFFER_BYTES = 64 * 1024 * 1024
RETENTION_INTERVAL = 3600.0


class ArchiveStage:
    """A pipeline `Stage` writing the archive; see the module docstring for its guarantees."""

    name = CONSUMER

    def __init__(self, settings: ArchiveSettings, reader: LogReader | LogSource, root: Path,
                 metrics: Registry, *, clock: Callable[[], float] = time.time,
                 poll_interval: float = 0.2) -> None:
        self.settings = settings
        self.source = as_source(reader)
        self.reader = reader_of(reader)  # the SQLite log, whose position a flush commits
        self.consumer: LogConsumer | None = None
        self.root = root
        self._clock = clock
        self._poll = min(poll_interval, settings.flush_interval)
        self._rows = metrics.counter("trackd_archive_rows_total", "Messages archived.")
        self._files = metrics.counter("trackd_archive_files_total", "Archive files written.")
        self._failures = metrics.counter("trackd_archive_flush_failures_total",
                                         "Archive flushes that failed and will be retried.")
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.reader is not None:
            await asyncio.to_thread(self.reader.register, CONSUMER)
        await asyncio.to_thread(self.recover)  # before the consumer: it may move the position
        self.consumer = await self.source.consumer(CONSUMER)
        await asyncio.to_thread(self.prune)
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="archive")

    async def stop(self) -> None:
        """Write what is buffered, commit it, and stop."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self.consumer is not None:
            await self.consumer.close()

    def prune(self) -> int:
        today = datetime.fromtimestamp(self._clock(), UTC).date()
        return retention.prune(self.root, today, self.settings.retention_days)

    # -- flushing --------------------------------------------------------------------------
    def flush(self, records: list[Record], start: Position, end: Position,
              flush_id: str) -> None:
        """Steps 1-4 of the module docstring. Durable on return."""
        intent = self.root / INTENT
        tmp = self.root / f".{INTENT}.tmp"
        tmp.write_text(json.dumps({"id": flush_id, "start": start, "end": end}))
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, intent)
        fsync_path(self.root)
        written = 0
        for partition, rows in files.group(records).items():
            files.write_file(self.root, partition, rows, f"part-{flush_id}")
            written += 1
        if self.reader is not None:
            self.reader.commit(CONSUMER, end)
        intent.unlink()
        self._rows.inc((), len(records))
        self._files.inc((), written)
        log.debug("archive flushed", extra={"rows": len(records), "files": written,
                                           "flush": flush_id})

    def recover(self) -> None:
        """Finish a flush a crash interrupted (see the module docstring)."""
        intent = self.root / INTENT
        if not intent.exists():
            return
        if self.reader is None:  # NATS: its records were not acknowledged and come again
            intent.unlink()
            return
        doc = json.loads(intent.read_text())
        start: Position = doc["start"]
        end: Position = doc["end"]
        committed = self.reader.position(CONSUMER)
        if all(committed.get(shard, 0) >= offset for shard, offset in end.items()):
            intent.unlink()
            return
        records: list[Record] = []
        for shard, last in end.items():
            after = start.get(shard, 0)
            while after < last:
                chunk = [r for r in self.reader.read_shard(shard, after, READ_CHUNK)
                         if r.offset <= last]
                if not chunk:
                    break
                records.extend(chunk)
                after = chunk[-1].offset
        log.info("archive: finishing an interrupted flush", extra={"flush": doc["id"],
                                                                    "rows": len(records)})
        self.flush(records, start, end, doc["id"])

    # -- the loop --------------------------------------------------------------------------
    async def _run(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        position: Position = {}
        if self.reader is not None:
            position = await asyncio.to_thread(self.reader.position, CONSUMER)
        start = dict(position)
        buffer: list[Record] = []
        size = 0
        first_at = 0.0
        flush_id: str | None = None
        next_prune = time.monotonic() + RETENTION_INTERVAL
        while True:
            stopping = self._stopping.is_set()
            records: list[Record] = []
            if not stopping:
                try:
                    limit = max(1, min(READ_CHUNK, self.settings.flush_rows - len(buffer)))
                    records = await consumer.read(limit)
                except Exception:
                    log.exception("archive: reading the log failed")
                if records:
                    if not buffer:
                        first_at = time.monotonic()
                    buffer.extend(records)
                    size += sum(len(r.body) for r in records)
                    position = advanced(position, records)
            now = self._clock()
            due = bool(buffer) and (stopping or len(buffer) >= self.settings.flush_rows
                                    or size >= MAX_BUFFER_BYTES
                                    or time.monotonic() - first_at >= self.settings.flush_interval)
            if due:
                flush_id = flush_id or (datetime.fromtimestamp(now, UTC).strftime(
                    "%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8])
                try:
                    await asyncio.to_thread(self.flush, buffer, start, position, flush_id)
                    if self.reader is None:
                        await consumer.ack(buffer)
                except Exception:
                    self._failures.inc()
                    log.exception("archive flush failed; retrying")
                    if stopping:
                        return  # the intent makes the next start finish it
                    await self._pause(1.0)
                    continue
                buffer, size, flush_id, start = [], 0, None, dict(position)
            if stopping:
                return
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + RETENTION_INTERVAL
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.prune)
            if not records:
                await self._pause(self._poll)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
