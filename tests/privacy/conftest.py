"""The privacy tests' fixtures: which warehouse a test runs on, a NATS stream of their own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.js.errors
import pytest

from tests.destinations.receiver import Receiver
from tests.log.natsd import MACHINE_NATS, NatsNode, machine_nats_up, unique_stream
from tests.warehouse import pg


@pytest.fixture(params=["duckdb", "postgresql"])
def warehouse_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Empty for the DuckDB file, else the URL of a PostgreSQL database of the test's own."""
    if request.param == "duckdb":
        yield ""
        return
    with pg.database("trackd_privacy") as url:
        yield url


@pytest.fixture
def shared_stream(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(NATS url, stream name): the machine's server, or a private one; the stream and its
    privacy buckets are deleted afterwards."""
    node = None
    if machine_nats_up():
        url = MACHINE_NATS
    else:
        node = NatsNode(tmp_path / "nats", "shared").start()
        url = node.url
    name = unique_stream()
    yield url, name

    async def delete() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        for stream in (name, f"KV_{name}-privacy", f"KV_{name}-regulations"):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(stream)
        await nc.close()

    asyncio.run(delete())
    if node is not None:
        node.kill()

@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver().start()
    yield found
    found.stop()
