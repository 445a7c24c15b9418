"""Per-source retention (`retention_days`): what is older goes, once a day (by default).

For each source with `retention_days` > 0: its warehouse rows received before the cutoff (its
tables and trackd's own rows of it), its archive partitions of dates before it, and its
quarantined messages. The log itself is trimmed by its consumers, not by age.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from trackd.archive.retention import prune
from trackd.messages.enrich import iso
from trackd.observability import get_logger
from trackd.privacy.erase import expire_quarantine

log = get_logger("privacy")
FIRST_RUN = 60.0  # seconds after start-up: not in the way of a restart's catch-up
INTERVAL = 86400.0


QuarantineExpiry = Callable[[str, str], Awaitable[int]]
"""(source, cutoff as ISO-8601) -> quarantined messages deleted: the log's (SQLite or NATS)."""


class Expiring(Protocol):
    async def expire(self, source: str, cutoff: datetime) -> int: ...


async def apply_retention(days: dict[str, float], *, log_dir: Path, archive: Path | None,
                          warehouse: Expiring | None, now: datetime,
                          quarantine: QuarantineExpiry | None = None) -> dict[str, int]:
    """Apply every source's retention as of `now` (aware, UTC); returns what went, per store."""
    removed = {"warehouse": 0, "archive": 0, "quarantine": 0}
    for source, kept in days.items():
        if kept <= 0:
            continue
        cutoff = now - timedelta(days=kept)
        if warehouse is not None:
            removed["warehouse"] += await warehouse.expire(source, cutoff.replace(tzinfo=None))
        if archive is not None:
            removed["archive"] += await asyncio.to_thread(prune, archive, now.date(), kept,
                                                          source)
        if quarantine is not None:
            removed["quarantine"] += await quarantine(source, iso(cutoff))
        else:
            removed["quarantine"] += await asyncio.to_thread(expire_quarantine, log_dir,
                                                             source, iso(cutoff))
    return removed


async def retention_forever(days: dict[str, float], *, log_dir: Path, archive: Path | None,
                            warehouse: Expiring | None, interval: float = INTERVAL,
                            clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                            quarantine: QuarantineExpiry | None = None) -> None:
    """Apply retention shortly after start-up (FIRST_RUN, or `interval` when shorter), then
    every `interval` seconds (`privacy.retention_interval`: a day)."""
    if not any(kept > 0 for kept in days.values()):
        return
    await asyncio.sleep(min(FIRST_RUN, interval))
    while True:
        try:
            removed = await apply_retention(days, log_dir=log_dir, archive=archive,
                                            warehouse=warehouse, now=clock(),
                                            quarantine=quarantine)
            log.info("retention applied", extra=removed)
        except Exception:
            log.exception("retention failed; trying again at its next run")
        await asyncio.sleep(interval)
