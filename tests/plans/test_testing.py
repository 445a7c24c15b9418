"""Testing an app's instrumentation: `trackd serve --ephemeral`, its test endpoints, and the
`trackd_server` pytest fixture used by a user's test file run with pytest in a subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, Server
from trackd.plans.plan import load

DOC = ROOT / "docs" / "data-quality.md"
_FILE_BLOCK = re.compile(r"^```\w+ file=(\S+)\n(.*?)^```", re.M | re.S)


def doc_files() -> dict[str, str]:
    """The files of docs/data-quality.md (fenced blocks marked `file=NAME`)."""
    return {name: body for name, body in _FILE_BLOCK.findall(DOC.read_text())}


def pytest_in(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest run in `project` as its developer would (schemathesis, a plugin of trackd's own
    test tools that takes seconds to import, left out)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "no:schemathesis", *args], cwd=project, capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.fixture
def ephemeral(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    proc = subprocess.Popen([sys.executable, "-m", "trackd", "serve", "--ephemeral", "--port",
                             "0"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("Stop with" in line for line in lines):
        lines.append(proc.stdout.readline())
    banner = "".join(lines)
    try:
        yield banner, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        proc.stdout.close()


def test_the_ephemeral_server_shows_what_arrived_and_forgets_it(
        ephemeral: tuple[str, subprocess.Popen[str]]) -> None:
    banner, proc = ephemeral
    host = re.search(r"listening on (\S+)", banner)[1]  # type: ignore[index]
    data = Path(re.search(r"data in (\S+)\)", banner)[1])  # type: ignore[index]
    assert "source default: write key test" in banner
    assert data.is_dir() and (data.stat().st_mode & 0o777) == 0o700
    with httpx.Client(base_url=host, auth=("test", ""), timeout=30) as client:
        assert client.post("/v1/batch", json={"batch": [
            {"type": "track", "userId": "u1", "event": "A", "messageId": "m1"},
            {"type": "identify", "userId": "u2", "messageId": "m2"},
            {"type": "track", "userId": "u1", "messageId": "m3"}]}).status_code == 200

        def arrived(**query: str) -> list[Any]:
            response = httpx.get(f"{host}/api/v1/test/messages", params=query, timeout=30)
            assert response.status_code == 200
            return [(m["status"], m["messageId"]) for m in response.json()["messages"]]

        assert arrived() == [("accepted", "m1"), ("accepted", "m2"), ("refused", "m3")]
        assert arrived(type="identify") == [("accepted", "m2")]
        assert arrived(event="A", user_id="u1") == [("accepted", "m1")]
        assert arrived(status="refused") == [("refused", "m3")]
        [refused] = httpx.get(f"{host}/api/v1/test/messages?status=refused",
                              timeout=30).json()["messages"]
        assert refused["reason"] == "Missing required field: event"
        assert httpx.post(f"{host}/api/v1/test/reset", timeout=30).json() == {"success": True}
        assert arrived() == []
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(30) == 0
    assert not data.exists()  # removed on exit


def test_the_test_endpoints_exist_only_in_ephemeral_mode(server: Server) -> None:
    headers = {"Authorization": "Bearer test-admin-token"}
    assert httpx.get(server.url + "/api/v1/test/messages", headers=headers,
                     timeout=30).status_code == 404
    assert httpx.get(server.url + "/api/v1/test/messages", timeout=30).status_code == 401
    assert httpx.post(server.url + "/api/v1/test/reset", headers=headers,
                      timeout=30).status_code == 404


def test_the_documented_example_app_test_passes(tmp_path: Path) -> None:
    files = doc_files()
    assert {"trackd.toml", "plans/shop.yaml", "pytest.ini", "shop.py", "test_shop.py"} <= set(
        files)
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    load(tmp_path / "plans" / "web.yaml")  # the reference plan of the doc loads too
    result = pytest_in(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_the_plugin_changes_nothing_for_a_project_that_does_not_use_it(
        tmp_path: Path) -> None:
    (tmp_path / "test_plain.py").write_text(
        "import os\n\n\ndef test_plain():\n    assert os.sep\n")
    with_plugin = pytest_in(tmp_path)
    without = pytest_in(tmp_path, "-p", "no:trackd")
    assert with_plugin.returncode == without.returncode == 0
    strip = re.compile(r" in [0-9.]+s")
    assert strip.sub("", with_plugin.stdout) == strip.sub("", without.stdout)
    listed = pytest_in(tmp_path, "--fixtures")
    assert "trackd_server" in listed.stdout  # offered, never started
