"""The seams between a deletion and the stores it does not own, and the batcher of rewrites.

`WarehouseSide` is the warehouse's part (`trackd.warehouse.erasure`), `LogErasure` the log's
(`trackd.privacy.erase` or `trackd.log.jetstream_erase`), `ArchiveEraser` the archive's
(`trackd.archive.erase`); `RewriteBatcher` lets pending warehouse deletions share one rewrite
of DuckDB's file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

from trackd.privacy.subjects import Subjects


class WarehouseSide(Protocol):
    """What a deletion needs of the warehouse (`trackd.warehouse.erasure`: one per store kind,
    picked by `backend.server_erasure`). `rewrites`: deleted rows' bytes are gone only after
    `rewrite` (DuckDB's file), which pending deletions then share."""

    @property
    def rewrites(self) -> bool: ...

    async def linked(self, user_ids: set[str], sources: set[str] | None) -> set[str]: ...

    async def erase(self, user_ids: set[str], anonymous_ids: set[str],
                    sources: set[str] | None) -> int: ...

    async def rewrite(self) -> None: ...

    async def expire(self, source: str, cutoff: datetime) -> int: ...


class LogErasure(Protocol):
    """What a deletion needs of the log: `SqliteLogErasure` (the embedded shards) or
    `trackd.log.jetstream_erase.JetStreamErasure` (the NATS stream)."""

    async def widen(self, subjects: Subjects) -> None: ...

    async def erase(self, subjects: Subjects) -> int: ...

    async def expire_quarantine(self, source: str, cutoff: str) -> int:
        """Retention: a source's quarantined messages received before `cutoff` (ISO-8601)."""


ArchiveEraser = Callable[[set[str], Callable[[bytes], bool], "set[str] | None", float], int]
"""(ids, matches, sources, newer_than) -> rows removed from the archive files written after
`newer_than` (a time.time(); 0: every file)."""


class RewriteBatcher:
    """Pending warehouse deletions share one rewrite, `delay` seconds after the first."""

    def __init__(self, delay: float, rewrite: Callable[[], Awaitable[None]]) -> None:
        self.delay = delay
        self.rewrite = rewrite
        self._pending: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None

    async def request(self) -> None:
        """Return once a rewrite that began after this call has finished."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(future)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._later())
        await future

    async def _later(self) -> None:
        while self._pending:
            await asyncio.sleep(self.delay)
            waiting, self._pending = self._pending, []
            try:
                await self.rewrite()
            except Exception as exc:
                for future in waiting:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for future in waiting:
                    if not future.done():
                        future.set_result(None)
