"""Fixtures: a real log with a loop thread (shared with the destination tests)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.destinations.harness import LogHarness


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[LogHarness]:
    h = LogHarness(tmp_path)
    yield h
    h.close()
