"""One `trackd serve` per test module: the tests use distinct messageIds, so they can share it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Server
from tests.gateway.helpers import GATEWAY_CONFIG, running_server


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("gateway") / "data", GATEWAY_CONFIG) as server:
        yield server
