"""docs/client.md stays complete: every setting and every public error has its entry."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import trackd
import trackd.client as analytics
from trackd.client import Client

DOC = Path(trackd.__file__).resolve().parents[1] / "docs" / "client.md"
PARAMETERS = [name for name in inspect.signature(Client).parameters]
MODULE_SETTINGS = [
    name
    for name in PARAMETERS
    if hasattr(analytics, name) and not callable(getattr(analytics, name))
]


@pytest.mark.parametrize("name", PARAMETERS)
def test_every_client_setting_has_a_row(name: str) -> None:
    assert f"| `{name}` |" in DOC.read_text()


@pytest.mark.parametrize("name", MODULE_SETTINGS)
def test_every_module_setting_is_listed(name: str) -> None:
    section = DOC.read_text().split("The module-level API reads", 1)[1].split("\n\n", 1)[0]
    assert f"`{name}`" in section


ERRORS = [
    name
    for name in analytics.__all__
    if isinstance(getattr(analytics, name), type)
    and issubclass(getattr(analytics, name), Exception)
]


@pytest.mark.parametrize("name", ERRORS)
def test_every_error_is_in_the_tree(name: str) -> None:
    tree = DOC.read_text().split("The exception tree", 1)[1].split("```", 2)[1]
    assert re.search(rf"(^|\s){name}\s", tree, flags=re.M)


def test_the_lists_above_are_not_empty() -> None:
    assert len(MODULE_SETTINGS) == 14
    assert len(ERRORS) == 9
