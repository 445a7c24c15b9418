"""The per-loop watchdog that answers 408 to bodies not received within BODY_TIMEOUT."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from trackd.gateway import body
from trackd.gateway.body import BodyTimeout, read_body


async def _read(receive: body.Receive) -> bytes:
    return await read_body(receive, limit=1024, too_large="too large", encoding=None,
                     declared_length=None)


async def _never() -> dict[str, Any]:
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")


async def _at_once() -> dict[str, Any]:
    return {"type": "http.request", "body": b"{}", "more_body": False}


@pytest.fixture(autouse=True)
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(body, "BODY_TIMEOUT", 0.3)


def test_a_body_that_never_arrives_times_out() -> None:
    async def main() -> None:
        started = asyncio.get_running_loop().time()
        with pytest.raises(BodyTimeout):
            await _read(_never)
        waited = asyncio.get_running_loop().time() - started
        assert waited >= 0.3  # not before the timeout (how much later is the machine's business)
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        await asyncio.sleep(0.01)  # the task is not cancelled any more

    asyncio.run(main())


def test_a_prompt_body_is_not_cancelled_later() -> None:
    async def main() -> None:
        assert await _read(_at_once) == b"{}"
        await asyncio.sleep(0.5)  # past BODY_TIMEOUT: nothing cancels this task now

    asyncio.run(main())


def test_slow_and_prompt_reads_side_by_side() -> None:
    async def main() -> tuple[object, object]:
        return await asyncio.gather(_read(_never), _read(_at_once), return_exceptions=True)

    slow, prompt = asyncio.run(main())
    assert isinstance(slow, BodyTimeout)
    assert prompt == b"{}"


def test_an_outside_cancellation_stays_a_cancellation() -> None:
    async def main() -> None:
        task = asyncio.create_task(_read(_never))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
