"""Start-up order: ready (the banner) once the tracking API answers with its log open, before
the supervisor has imported the pipeline (DuckDB, pyarrow); the pipeline comes up after and
loses nothing accepted meanwhile. The time it takes is measured in bench/startup.py."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ROOT, Server, eventually
from trackd.server.starting import StartingAdmin

PIPELINE_MODULES = ("duckdb", "pyarrow", "trackd.app", "trackd.warehouse", "trackd.archive",
                    "trackd.destinations")


def _imported(lines: list[str]) -> set[str]:
    """The modules `python -X importtime` reported in `lines` (the supervisor's own: the
    workers are started without -X importtime)."""
    return {line.split("|")[-1].strip() for line in lines if line.startswith("import time:")}


class _Output:
    """A process's output read as it comes; `until` returns the lines before a marker."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.rest = b""

    def until(self, marker: str, timeout: float = 60.0) -> list[str]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while marker.encode() not in self.rest:
            said = self.rest.decode(errors="replace")[-3000:]
            assert self.proc.poll() is None and time.monotonic() < deadline, said
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                self.rest += os.read(self.proc.stdout.fileno(), 65536)
        before, self.rest = self.rest.split(marker.encode(), 1)
        return before.decode(errors="replace").splitlines()


def _pipeline(modules: set[str]) -> set[str]:
    return {m for m in modules for p in PIPELINE_MODULES if m == p or m.startswith(p + ".")}


def test_ready_comes_before_the_pipeline_is_imported_and_nothing_accepted_is_lost(
        make_server: Callable[..., Server]) -> None:
    server = make_server(start=False)
    # stdout (the banner, flushed as it is written) and stderr (-X importtime, unbuffered) of
    # one process in one pipe: the order of the lines is the order of the events.
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", *server.command("serve")[1:], "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        output = _Output(proc)
        before = _imported(output.until("trackd is listening on"))
        assert "trackd.server.supervisor" in before  # the report works
        assert not _pipeline(before)
        info = json.loads((server.data_dir / "run" / "server.json").read_text())
        # ready means the tracking API answers and a 200 means stored, pipeline or not
        with httpx.Client(base_url=f"http://127.0.0.1:{info['port']}", timeout=30) as client:
            assert client.post("/v1/track", auth=("wk_web", ""), json={
                "userId": "u1", "event": "Early", "messageId": "early-1"}).status_code == 200
        # the pipeline is then loaded here, in the supervisor
        after = _imported(output.until("pipeline started"))
        assert {"duckdb", "pyarrow", "trackd.app"} <= after
        eventually(lambda: json.loads((server.data_dir / "run" / "server.json").read_text())
                   ["pipeline"] == "running", timeout=60)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever the pipeline did or not: kill -9
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
    server.start()

    def loaded() -> bool:
        shown = json.loads(server.run_cli("events", "show", "early-1", "--format",
                                          "json").stdout)
        return bool(shown["warehouse"]["loaded"])

    eventually(loaded, timeout=60)


async def _ask(app: StartingAdmin, path: str) -> tuple[int, Any]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "path": path, "method": "GET"}, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


async def _admin(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = json.dumps({"path": scope["path"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_while_the_pipeline_starts_readyz_says_so_and_admin_requests_wait_for_it() -> None:
    async def scenario() -> None:
        gate = StartingAdmin(wait=60)
        assert await _ask(gate, "/readyz") == (503, {
            "ready": False, "status": "starting", "reason": "the pipeline is starting",
            "stages": []})
        waiting = asyncio.create_task(_ask(gate, "/api/v1/status"))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # held, not refused
        gate.open(_admin)
        assert await asyncio.wait_for(waiting, 30) == (200, {"path": "/api/v1/status"})
        assert await _ask(gate, "/readyz") == (200, {"path": "/readyz"})

        late = StartingAdmin(wait=0.01)  # a pipeline that never comes up: 503, not a hang
        status, doc = await _ask(late, "/api/v1/status")
        assert status == 503 and doc["error"]["message"].startswith("the pipeline is still")

    asyncio.run(scenario())


def test_trackd_status_right_after_the_banner_says_the_pipeline_is_starting(tmp_path: Path) -> None:
    # `./scripts/serve` then another shell's `trackd status`
    command = [sys.executable, "-m", "trackd", "serve", "--data-dir", str(tmp_path / "d"),
               "--port", "0"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=tmp_path, start_new_session=True)
    try:
        _Output(proc).until("trackd is listening on")
        status = subprocess.run([sys.executable, "-m", "trackd", "status", "--data-dir",
                                 str(tmp_path / "d")], capture_output=True, text=True,
                                cwd=tmp_path, timeout=120)
        # answered at once: either the pipeline is still starting (exit 1, as for any stage
        # not running) or it runs
        said = (status.returncode, status.stdout.splitlines()[1])
        assert said in [(1, "pipeline: not ready: the pipeline is starting"),
                        (0, "pipeline: ready")], status.stdout + status.stderr
        assert "accepting messages" in status.stdout.splitlines()[0]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        if proc.stdout is not None:
            proc.stdout.close()
