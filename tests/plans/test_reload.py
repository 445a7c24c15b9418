"""Reloading a plan under load: no request fails, the new plan takes over, a broken one is
refused and the plan in force stays."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Server, eventually
from trackd.log.reader import LogReader

CONFIG = """
[server]
admin_token = "test-admin-token"

[[sources]]
name = "web"
write_keys = ["wk_web"]
tracking_plan = "web.yaml"
"""


def plan(version: int, *events: str) -> str:
    listed = "".join(f"  {name}:\n    properties: {{type: object}}\n" for name in events)
    return f"version: {version}\nevents:\n{listed}"


class Load:
    """Threads posting batches over keep-alive connections until stopped; counts failures."""

    def __init__(self, server: Server, threads: int = 4) -> None:
        self.server = server
        self.stop = threading.Event()
        self.sent = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self) -> None:
        body = {"batch": [{"type": "track", "userId": "u", "event": "Known"}] * 20}
        with httpx.Client(base_url=self.server.url, auth=("wk_web", ""), timeout=30) as client:
            while not self.stop.is_set():
                try:
                    response = client.post("/v1/batch", json=body)
                    failed = None if response.status_code == 200 else response.text
                except httpx.HTTPError as exc:
                    failed = repr(exc)
                with self._lock:
                    self.sent += 1
                    if failed is not None:
                        self.failures.append(failed)


def versions_seen(server: Server, probes: int = 12) -> set[int]:
    """The plan versions that judged `probes` messages, each on a new connection (so that
    every worker takes some); each probe is an unplanned event in every version."""
    ids = []
    for index in range(probes):
        message_id = f"probe-{os.urandom(4).hex()}-{index}"
        response = httpx.post(server.url + "/v1/track", auth=("wk_web", ""), timeout=30, json={
            "userId": "u", "event": "Never Planned", "messageId": message_id})
        assert response.status_code == 200
        ids.append(message_id)
    reader = LogReader(server.data_dir / "log")
    try:
        rows: list[tuple[Any, ...]] = []
        for message_id in ids:
            rows += reader.read_violations({}, message_id=message_id)
    finally:
        reader.close()
    assert len(rows) == probes
    return {int(row[11]) for row in rows}


def test_a_plan_reloads_under_load_with_no_failed_request(
        tmp_path: Path, make_server: Any) -> None:
    (tmp_path / "web.yaml").write_text(plan(1, "Known"))
    server: Server = make_server(CONFIG, workers=2)
    assert versions_seen(server) == {1}
    with Load(server) as load:
        eventually(lambda: load.sent > 20)
        (tmp_path / "web.yaml").write_text(plan(2, "Known", "New"))
        result = server.run_cli("plan", "reload")
        assert result.stdout.startswith("asked trackd (pid ")
        eventually(lambda: versions_seen(server) == {2})
        sent = load.sent
        # a broken plan: refused with the reason, the plan in force stays
        (tmp_path / "web.yaml").write_text("version: 3\ncontrols: {violations: drop}\n")
        result = server.run_cli("plan", "reload", check=False)
        assert result.returncode == 1
        assert result.stderr == (
            f"{tmp_path / 'web.yaml'}:2: controls.violations: unknown value 'drop': use one "
            "of flag, omit, block (the server keeps the previous plan)\n")
        eventually(lambda: server.output.read_text().count("tracking plan not reloaded") >= 2)
        assert versions_seen(server) == {2}
        # and a plain SIGHUP to the supervisor does the same as the command
        (tmp_path / "web.yaml").write_text(plan(4, "Known", "New"))
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGHUP)
        eventually(lambda: versions_seen(server) == {4})
        eventually(lambda: load.sent > sent + 20)
    assert load.failures == []
    assert load.sent > 40
    assert server.proc is not None and server.proc.poll() is None


def test_readyz_and_status_show_each_plan_version_and_the_last_reload_error(
        tmp_path: Path, make_server: Any) -> None:
    (tmp_path / "web.yaml").write_text(plan(1, "Known"))
    server: Server = make_server(CONFIG)

    def plans() -> dict[str, Any]:
        doc: dict[str, Any] = httpx.get(server.url + "/readyz", timeout=30).json()
        return dict(doc.get("plans", {}))

    assert eventually(lambda: plans() == {"web": {"versions": [1], "reloadFailed": False}})
    (tmp_path / "web.yaml").write_text("version: 3\ncontrols: {violations: drop}\n")
    assert server.run_cli("plan", "reload", check=False).returncode == 1
    # the plan in force stays; the public answer says a reload failed, not the error's text
    assert eventually(lambda: plans() == {"web": {"versions": [1], "reloadFailed": True}})
    status = server.run_cli("status", check=False).stdout
    assert ("plan web: version 1; last reload failed (previous plan kept): "
            f"{tmp_path / 'web.yaml'}:2: controls.violations: unknown value 'drop'") in status
    (tmp_path / "web.yaml").write_text(plan(2, "Known"))
    server.run_cli("plan", "reload")
    assert eventually(lambda: plans() == {"web": {"versions": [2], "reloadFailed": False}})
    assert "plan web: version 2\n" in server.run_cli("status", check=False).stdout
