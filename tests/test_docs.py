"""Documentation stays complete: every setting has a heading in docs/settings.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from trackd.settings import SETTINGS

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", [s[0] for s in SETTINGS])
def test_every_setting_is_documented(name: str) -> None:
    text = (ROOT / "docs" / "settings.md").read_text()
    assert f"### `{name}`" in text


def test_settings_doc_has_no_stale_entries() -> None:
    text = (ROOT / "docs" / "settings.md").read_text()
    documented = set(re.findall(r"^### `([a-z_.]+)`", text, flags=re.M))
    assert documented == {s[0] for s in SETTINGS}


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["./scripts/serve", "./scripts/test"]
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text()
