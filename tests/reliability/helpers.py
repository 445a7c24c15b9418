"""Shared tools of the reliability suite: log counts, worker RSS, message factories, configs."""

from __future__ import annotations

import base64
import itertools
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Server

ADMIN = "test-admin-token"
# Long trim interval: nothing leaves the log while a test counts what is in it.
BASE_CONFIG = """
[server]
admin_token = "test-admin-token"
{server_extra}

[log]
trim_interval = 3600

[[sources]]
name = "web"
write_keys = ["wk_web"]
{source_extra}

[[sources]]
name = "backend"
write_keys = ["wk_backend"]
{extra}
"""


def config(server_extra: str = "", source_extra: str = "", extra: str = "") -> str:
    return BASE_CONFIG.format(server_extra=server_extra, source_extra=source_extra, extra=extra)


def basic(user: str, password: str = "") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


WEB = basic("wk_web")
_counter = itertools.count()
_lock = threading.Lock()


def message_id(prefix: str) -> str:
    with _lock:
        return f"{prefix}-{os.getpid()}-{next(_counter)}"


def track(mid: str, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Reliability Test", "userId": "u-1", "messageId": mid,
            "properties": {"n": 1}, **extra}


def log_counts(data_dir: Path, source: str | None = None) -> Counter[str]:
    """messageId -> number of records in every log shard (read straight from SQLite)."""
    counts: Counter[str] = Counter()
    for path in sorted((data_dir / "log").glob("gw*.log.db")):
        conn = sqlite3.connect(path, timeout=30)
        try:
            sql = "SELECT message_ids FROM frames"
            args: tuple[str, ...] = ()
            if source is not None:
                sql += " WHERE source = ?"
                args = (source,)
            for (ids,) in conn.execute(sql, args):
                counts.update(json.loads(ids))
        finally:
            conn.close()
    return counts


def integrity(data_dir: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sorted((data_dir / "log").glob("gw*.log.db")):
        conn = sqlite3.connect(path, timeout=30)
        try:
            out[path.name] = conn.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            conn.close()
    return out


def supervisor_pid(server: Server) -> int:
    assert server.proc is not None
    return server.proc.pid


def worker_pids(server: Server) -> list[int]:
    """Children of the supervisor (the gateway workers)."""
    parent = supervisor_pid(server)
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent:
            pids.append(int(entry.name))
    return pids


def running_workers(server: Server) -> set[int]:
    """The supervisor's children that are running (a crashed one is gone or a zombie)."""
    parent = supervisor_pid(server)
    pids: set[int] = set()
    for task in Path(f"/proc/{parent}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                pids.add(int(pid))
    return pids


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def workers_rss_kb(server: Server) -> dict[int, int]:
    return {pid: rss_kb(pid) for pid in worker_pids(server)}


def alive(server: Server) -> bool:
    """The server runs and answers /healthz: 200, or 503 with its one-line reason (a full
    disk or log is a state the server reports, not a death)."""
    if server.proc is None or server.proc.poll() is not None:
        return False
    try:
        answer = httpx.get(server.url + "/healthz", timeout=10)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200 or (answer.status_code == 503
                                         and bool(answer.json().get("reason")))


def send_valid(server: Server, prefix: str = "alongside") -> tuple[str, int]:
    """One valid single message; returns (messageId, status)."""
    mid = message_id(prefix)
    response = httpx.post(server.url + "/v1/track", json=track(mid), headers=WEB, timeout=30)
    return mid, response.status_code


def warehouse_tracks(server: Server) -> tuple[int, int]:
    response = httpx.post(
        server.url + "/api/v1/query",
        json={"sql": "SELECT count(*) AS n, count(DISTINCT id) AS d FROM web.tracks"},
        headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)
    response.raise_for_status()
    row = response.json()["rows"][0]
    values = list(row.values())
    return int(values[0]), int(values[1])


def warehouse_load_errors(server: Server) -> str:
    """What `_trackd.load_errors` says (for failure messages); never raises."""
    try:
        response = httpx.post(
            server.url + "/api/v1/query", timeout=60,
            json={"sql": "SELECT error, count(*) AS n FROM _trackd.load_errors GROUP BY error"},
            headers={"Authorization": f"Bearer {ADMIN}"})
        return response.text[:1000]
    except httpx.HTTPError as exc:
        return repr(exc)


def assert_warehouse_has_exactly(server: Server, want: int, timeout: float,
                                 figures: str = "") -> None:
    """Wait until the warehouse holds `want` distinct tracks, then assert each exactly once.

    The warehouse is part of every server: a query API that does not answer fails here."""
    deadline = time.monotonic() + timeout
    while warehouse_tracks(server)[1] < want and time.monotonic() < deadline:
        time.sleep(0.2)
    rows, distinct = warehouse_tracks(server)
    wfig = f"{figures} warehouse_rows={rows} warehouse_distinct={distinct} want={want}"
    if rows != want:
        wfig += f" load_errors={warehouse_load_errors(server)}"
    print(wfig)  # noqa: T201 - the figures reported in docs/guarantees.md
    assert rows == distinct == want, wfig
