"""The `trackd_server` pytest fixture: an ephemeral trackd for an app's analytics tests.

Registered through the `pytest11` entry point, so installing trackd is enough. Nothing runs
until a test asks for the fixture: then one `trackd serve --ephemeral` starts for the session
(on a free port of 127.0.0.1), and each test gets it emptied. Point the SDK at `.host` with
`.write_key`, run the code under test, flush, and assert on `.messages()`, `.refused()` and
`.violations()`.

The server's sources and tracking plans come from the ini option `trackd_config` (a
`trackd.toml`, relative to the rootdir), else the source `default` with the write key `test`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT = 60.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("trackd_config", "trackd.toml of the trackd_server fixture (sources, "
                  "tracking plans); default: the source `default`, write key `test`")


class TrackdServer:
    """A running ephemeral trackd, and what arrived at it."""

    def __init__(self, host: str, write_key: str) -> None:
        self.host = host
        self.write_key = write_key

    def messages(self, type: str | None = None, event: str | None = None,  # noqa: A002
                 user_id: str | None = None) -> list[dict[str, Any]]:
        """The accepted messages as stored (oldest first), filtered by type, event, userId."""
        return [item["message"] for item in self.arrived(
            status="accepted", type=type, event=event, user_id=user_id)]

    def refused(self) -> list[dict[str, Any]]:
        """The refused messages: `messageId`, `reason`, `violations` and the `message` sent."""
        return self.arrived(status="refused")

    def violations(self) -> list[dict[str, Any]]:
        """Every tracking plan violation, each with the `messageId`, `type` and `event` of its
        message and its `violation`, `path`, `rule`, `message`, `plan_version`, `action`."""
        return [{"messageId": item["messageId"], "type": item["type"], "event": item["event"],
                 **violation} for item in self.arrived() for violation in item["violations"]]

    def arrived(self, **filters: str | None) -> list[dict[str, Any]]:
        """Everything that arrived, as `GET /api/v1/test/messages` answers it."""
        query = urllib.parse.urlencode({k: v for k, v in filters.items() if v is not None})
        with urllib.request.urlopen(f"{self.host}/api/v1/test/messages?{query}",
                                    timeout=30) as response:
            items: list[dict[str, Any]] = json.load(response)["messages"]
        return items

    def reset(self) -> None:
        """Forget everything that arrived."""
        request = urllib.request.Request(f"{self.host}/api/v1/test/reset", data=b"",
                                         method="POST")
        with urllib.request.urlopen(request, timeout=30):
            pass


def _write_key(config: Path | None) -> str:
    if config is None:
        return "test"
    from trackd.settings import load

    sources = load(config, env={}).sources
    return sources[0].write_keys[0] if sources else "test"


@pytest.fixture(scope="session")
def _trackd_ephemeral(pytestconfig: pytest.Config) -> Iterator[TrackdServer]:
    configured = pytestconfig.getini("trackd_config")
    config = (Path(str(pytestconfig.rootpath)) / configured) if configured else None
    command = [sys.executable, "-m", "trackd", "serve", "--ephemeral", "--port", "0"]
    if config is not None:
        command += ["--config", str(config)]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True,
                                start_new_session=True)
        try:
            host = _wait_for_host(proc, log)
            yield TrackdServer(host, _write_key(config))
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()


def _wait_for_host(proc: subprocess.Popen[str], log: Any) -> str:
    """The server's URL, from the line its banner starts with."""
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("trackd is listening on "):
            return line.split()[4]
        if not line and proc.poll() is not None:
            log.seek(0)
            output = log.read().decode(errors="replace").strip()
            raise RuntimeError(f"trackd serve --ephemeral failed: {output[-2000:]}")
    raise RuntimeError("trackd serve --ephemeral did not start in time")


@pytest.fixture
def trackd_server(_trackd_ephemeral: TrackdServer) -> TrackdServer:
    """An ephemeral trackd server, emptied for this test."""
    _trackd_ephemeral.reset()
    return _trackd_ephemeral
