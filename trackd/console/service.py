"""The console as one object: its tail of the log, counts, live hub, sessions and routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from trackd.console.access import ConsoleAccess
from trackd.console.counts import Counts
from trackd.console.destinations import DestinationsView
from trackd.console.live import LiveHub
from trackd.console.session import Sessions
from trackd.log.choice import log_dir
from trackd.log.tail import LogTail
from trackd.server.priority import lower_thread_priority

if TYPE_CHECKING:
    from trackd.app import Pipeline

SAVE_INTERVAL = 5.0


class Console:
    def __init__(self, pipeline: Pipeline) -> None:
        settings = pipeline.settings
        self.pipeline = pipeline
        self.sessions = Sessions(settings.server.admin_token,
                                 revoked=settings.data_dir / "console" / "revoked-sessions")
        self.access = ConsoleAccess(self.sessions)
        keys = [key for source in settings.sources for key in source.write_keys]
        self.live = LiveHub(pipeline.metrics, keys)
        self.counts = Counts(settings.data_dir / "console" / "counts.json")
        # The local shards (on the NATS log there are none: live counts stay empty).
        self.tail = LogTail(log_dir(settings), thread_setup=lower_thread_priority)
        self.tail.frames.update(self.counts.positions["frames"])
        self.tail.refusals.update(self.counts.positions["refusals"])
        self.tail.violations.update(self.counts.positions.get("violations", {}))
        self.tail.sinks += [self.counts.add, self.live.sink]
        self.destinations = DestinationsView(pipeline.stages, pipeline.health)
        self._saver: asyncio.Task[None] | None = None

    def routes(self) -> list[Any]:
        from trackd.console.api import api_routes
        from trackd.console.pages import page_routes

        return [*api_routes(self), *page_routes(self)]

    async def forget(self, matches: Callable[[bytes], bool]) -> int:
        """A privacy deletion: drop what the console keeps that `matches` (the live stream's
        buffers, the schema samples in counts.json); returns how many items went."""
        return self.live.forget(matches) + await asyncio.to_thread(self.counts.forget, matches)

    async def start(self) -> None:
        self.tail.start()
        self._saver = asyncio.create_task(self._save_forever())

    async def stop(self) -> None:
        if self._saver is not None:
            self._saver.cancel()
        await asyncio.to_thread(self.tail.stop)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self.counts.save)
        self.destinations.close()

    async def _save_forever(self) -> None:
        while True:
            await asyncio.sleep(SAVE_INTERVAL)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.counts.save)
