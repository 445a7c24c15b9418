"""A server shared by a module's tests (hypothesis refuses function-scoped fixtures)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import Server
from tests.reliability.helpers import config


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("shared") / "data", config(), workers=2).start()
    yield server
    try:
        server.stop(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
