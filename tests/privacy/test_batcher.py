"""Pending warehouse deletions share one rewrite of the file."""

from __future__ import annotations

import asyncio

from trackd.privacy.stores import RewriteBatcher


def test_requests_within_the_delay_share_one_rewrite_and_later_ones_get_their_own() -> None:
    rewrites: list[int] = []
    started = asyncio.Event()
    release = asyncio.Event()

    async def rewrite() -> None:
        rewrites.append(len(rewrites) + 1)
        started.set()
        await release.wait()

    async def scenario() -> None:
        batcher = RewriteBatcher(0.05, rewrite)
        first = [asyncio.create_task(batcher.request()) for _ in range(3)]
        await started.wait()  # the first rewrite runs: a request now needs another one
        late = asyncio.create_task(batcher.request())
        release.set()
        await asyncio.gather(*first)
        assert rewrites == [1]
        await late
        assert rewrites == [1, 2]

    asyncio.run(scenario())


def test_a_failed_rewrite_fails_every_request_it_carried() -> None:
    async def rewrite() -> None:
        raise OSError("disk full")

    async def scenario() -> None:
        batcher = RewriteBatcher(0.0, rewrite)
        results = await asyncio.gather(batcher.request(), batcher.request(),
                                       return_exceptions=True)
        assert [str(r) for r in results] == ["disk full", "disk full"]

    asyncio.run(scenario())
