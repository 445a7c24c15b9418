"""The privacy tests' fixtures: which warehouse a test runs on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.warehouse import pg


@pytest.fixture(params=["duckdb", "postgresql"])
def warehouse_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Empty for the DuckDB file, else the URL of a PostgreSQL database of the test's own."""
    if request.param == "duckdb":
        yield ""
        return
    with pg.database("trackd_privacy") as url:
        yield url
