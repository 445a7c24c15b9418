"""scripts/serve installs only trackd's runtime dependencies, says so while it does, and runs
no pip at all when pyproject.toml has not changed since the last install; the test tools
come only with scripts/install-dev (which scripts/test runs).

pip itself is replaced by a stand-in `.venv/bin/python` that records how it was called: what
is checked is the scripts' own logic, in a copy of scripts/ and the two requirement files.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import ROOT

FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$(dirname "$0")/../../pip-calls"
"""


def checkout(tmp_path: Path) -> Path:
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT / "scripts", copy / "scripts")
    for name in ("pyproject.toml", "requirements-dev.txt"):
        shutil.copy2(ROOT / name, copy / name)
    python = copy / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return copy


def run(copy: Path, script: str) -> tuple[str, list[str]]:
    calls = copy / "pip-calls"
    calls.unlink(missing_ok=True)
    result = subprocess.run([str(copy / "scripts" / script)], capture_output=True, text=True,
                            timeout=60, cwd=copy)
    assert result.returncode == 0, result.stderr
    return result.stderr, calls.read_text().splitlines() if calls.exists() else []


def test_install_says_what_it_does_installs_the_runtime_only_and_then_skips_pip(
        tmp_path: Path) -> None:
    copy = checkout(tmp_path)
    said, calls = run(copy, "install")
    assert said.startswith("Installing trackd and its runtime dependencies into .venv")
    assert calls == ["-m pip install --quiet --disable-pip-version-check -e ."]
    said, calls = run(copy, "install")
    assert (said, calls) == ("", [])  # nothing changed: no pip, no message
    (copy / "pyproject.toml").write_text((copy / "pyproject.toml").read_text() + "\n")
    said, calls = run(copy, "install")
    assert said and calls == ["-m pip install --quiet --disable-pip-version-check -e ."]


def test_the_test_tools_come_only_with_install_dev(tmp_path: Path) -> None:
    copy = checkout(tmp_path)
    said, calls = run(copy, "install-dev")
    assert calls == ["-m pip install --quiet --disable-pip-version-check -e .",
                     "-m pip install --quiet --disable-pip-version-check -r requirements-dev.txt"]
    assert "test tools" in said
    assert run(copy, "install-dev") == ("", [])
    assert "install-dev" in (ROOT / "scripts" / "test").read_text()
    assert "requirements-dev" not in (ROOT / "scripts" / "serve").read_text()
