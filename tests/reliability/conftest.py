"""A server shared by a module's tests (hypothesis refuses function-scoped fixtures)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import Server
from tests.reliability.helpers import config, running_workers


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("shared") / "data", config(), workers=2).start()
    yield server
    try:
        server.stop(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


@pytest.fixture(scope="module")
def workers(shared_server: Server) -> set[int]:
    """The shared server's running workers at first use: a test that sends traffic checks
    none of them has died since (a crash is its own traffic's doing, not an earlier test's)."""
    return running_workers(shared_server)
