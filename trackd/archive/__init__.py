"""The archive: processed log -> zstd Parquet, date-partitioned, for replay and analysis.

Modules: `files` (layout and atomic writes), `stage` (the log consumer `archive`), `retention`,
`reader` (filtered scans for replay). The composition root calls `build_archive`.
"""

from __future__ import annotations

from pathlib import Path

from trackd.archive.stage import ArchiveStage
from trackd.log.choice import reader_of
from trackd.log.protocol import LogSource
from trackd.log.reader import LogReader
from trackd.observability import Registry
from trackd.settings import Settings
from trackd.types import Stage


def archive_dir(data_dir: Path) -> Path:
    return data_dir / "archive"


def build_archive(settings: Settings, reader: LogReader | LogSource, metrics: Registry,
                  data_dir: Path) -> Stage | None:
    """The archive stage, or None when `archive.enabled` is false.

    Registers the consumer `archive` at once, so trimming waits for it from here on (on the
    NATS log, when the stage starts).
    """
    if not settings.archive.enabled:
        return None
    local = reader_of(reader)
    if local is not None:
        local.register("archive")
    return ArchiveStage(settings.archive, reader, archive_dir(data_dir), metrics)


__all__ = ["archive_dir", "build_archive"]
