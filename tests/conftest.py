"""Shared fixtures: a real trackd server process on 127.0.0.1 with its own data dir."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (for example "4m") mounted at the new directory `mount` (needs root),
    unmounted at the end."""
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                   check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def eventually(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


class Server:
    """A `trackd serve` subprocess. Start it with `start()`; kill -9 it with `kill()`."""

    def __init__(self, data_dir: Path, config: str, workers: int = 1,
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.config_path = data_dir.parent / f"{data_dir.name}.toml"
        self.config_path.write_text(config)
        self.workers = workers
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.output = data_dir.parent / f"{data_dir.name}.out"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "trackd", *args, "--config", str(self.config_path),
                "--data-dir", str(self.data_dir)]

    def start(self, *args: str, timeout: float = 60.0) -> Server:
        """Start `trackd serve` (with extra `args`, e.g. "--log-level", "debug")."""
        info = self.data_dir / "run" / "server.json"
        info.unlink(missing_ok=True)
        env = {**os.environ, **self.env}
        with self.output.open("ab") as out:
            self.proc = subprocess.Popen(
                [*self.command("serve"), "--port", str(self.port),
                 "--workers", str(self.workers), *args],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        # Ready (server.json) comes before the pipeline runs: wait for that too, as the tests
        # check what the pipeline does and what /readyz says of it.
        while not info.exists() or json.loads(info.read_text())["pipeline"] == "starting":
            if self.proc.poll() is not None:
                raise AssertionError(f"trackd exited: {self.output.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"trackd did not start: {self.output.read_text()[-3000:]}")
            time.sleep(0.05)
        self.port = json.loads(info.read_text())["port"]
        return self

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the clean shutdown path."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        """kill -9 every process of the server (supervisor and workers)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def run_cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a `trackd` subcommand against this server's config and data dir."""
        result = subprocess.run(self.command(*args), capture_output=True, text=True, cwd=ROOT,
                                timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"trackd {args} failed: {result.stderr}")
        return result

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


DEFAULT_CONFIG = """
[server]
admin_token = "test-admin-token"

[[sources]]
name = "web"
write_keys = ["wk_web"]

[[sources]]
name = "backend"
write_keys = ["wk_backend", "wk_backend_2"]
"""


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Factory: make_server(config=..., workers=1, start=True) -> a running Server."""
    servers: list[Server] = []

    def factory(config: str = DEFAULT_CONFIG, *, workers: int = 1, start: bool = True,
                name: str = "data", env: dict[str, str] | None = None) -> Server:
        server = Server(tmp_path / name, config, workers=workers, env=env)
        servers.append(server)
        return server.start() if start else server

    yield factory
    for server in servers:
        if server.proc is not None:
            try:
                server.stop(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    """A running server with sources `web` (wk_web) and `backend` (wk_backend)."""
    return make_server()
