"""Archive retention: whole `date=` partitions older than `retention_days` are deleted."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path

from trackd.observability import get_logger

log = get_logger("archive")
_DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


def cutoff(today: date, retention_days: float) -> date:
    """The oldest date kept: a partition is expired when its date is before this one."""
    return today - timedelta(days=int(retention_days))


def expired(dates: Iterable[str], today: date, retention_days: float) -> list[str]:
    """The dates (YYYY-MM-DD) past the retention, sorted."""
    limit = cutoff(today, retention_days).isoformat()
    return sorted(d for d in dates if d < limit)


def prune(root: Path, today: date, retention_days: float, source: str | None = None) -> int:
    """Delete expired partitions under `root` (of one source when given); returns how many
    partitions were deleted."""
    if not root.is_dir():
        return 0
    deleted = 0
    for source_dir in root.glob(f"source={source}" if source is not None else "source=*"):
        dates = {m.group(1): p for p in source_dir.iterdir()
                 if p.is_dir() and (m := _DATE_DIR.match(p.name))}
        for day in expired(dates, today, retention_days):
            shutil.rmtree(dates[day], ignore_errors=True)
            deleted += 1
            log.info("archive partition deleted", extra={"partition": str(dates[day])})
        if not any(source_dir.iterdir()):
            source_dir.rmdir()
    return deleted
