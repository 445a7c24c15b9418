"""The servers under test, each started fresh in its own session and stopped by its own group.

- nginx: the Debian package answering a static 200 on every path (the physical-limit reference),
  from a private config under the run directory (never the system service);
- baseline: bench/baselines/naive_fastapi (FastAPI + pydantic + one SQLite commit per request)
  under uvicorn from bench/.venv-baseline;
- floor: bench/baselines/floor (the stack benchmark's minimal durable design: raw ASGI,
  msgspec, group commit into SQLite) under uvicorn from trackd's own venv;
- trackd: `trackd serve` with its defaults (fsync before 200), 1 or 2 gateway workers;
  trackd-2w-plan: the same with a tracking plan of 50 events on its source (bodies.py);
  trackd-nats-1w/-2w: the same on the NATS JetStream log (`[log] url`, a stream of its own on
  the server at $TRACKD_BENCH_NATS, default nats://127.0.0.1:4222; R1), 1 or 2 gateways.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import bodies

if TYPE_CHECKING:
    from nats.js import JetStreamContext

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WRITE_KEY = "wk_bench_0123456789abcdef"
ADMIN_TOKEN = "adm_bench_0123456789abcdef"
SOURCE = "bench"
AUTH = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
PROBE = (b'{"userId":"bench-probe","event":"Bench Probe","properties":{"ok":true}}')

NGINX_CONF = """\
worker_processes {workers};
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 65s;
    client_max_body_size 1m;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 200 '{{"success":true}}';
        }}
    }}
}}
"""

TRACKD_TOML = """\
[server]
admin_token = "{token}"

[log]
# Trimming deletes log records every consumer has passed; postponed so the correctness check
# can count the rows after each run. It runs in the background and is off the request path.
trim_interval = 3600.0
{log_extra}
{extra}
[[sources]]
name = "{source}"
write_keys = ["{key}"]
{source_extra}"""
GATEWAY_ONLY = """
# --gateway-only: no log consumers, to measure the tracking API alone.
[warehouse]
enabled = false

[archive]
enabled = false
"""


@dataclass(frozen=True)
class Target:
    name: str  # "nginx", "baseline", "floor", "trackd-1w", "trackd-2w"
    kind: str  # "nginx", "baseline", "floor", "trackd"
    workers: int
    plan: bool = False  # trackd: a 50-event tracking plan on the source
    nats: bool = False  # trackd: the NATS JetStream log instead of the SQLite shards


@dataclass
class Running:
    target: Target
    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    data_dir: Path | None = None
    db_path: Path | None = None
    stream: str | None = None  # trackd on NATS: its stream
    notes: list[str] = field(default_factory=list)

    @property
    def pgid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count_rows(self) -> int | None:
        """Rows durably stored so far: trackd's log shards, the baseline's table, the floor's
        per-process tables."""
        if self.stream is not None:
            return asyncio.run(_stream_messages(self.stream, delete=False))
        if self.target.kind == "trackd":
            assert self.data_dir is not None
            paths = sorted((self.data_dir / "log").glob("*.log.db"))
            return sum(_count(path, "frames", "sum(count)") for path in paths)
        if self.target.kind == "floor":
            assert self.data_dir is not None
            return sum(_count(path, "events") for path in sorted(self.data_dir.glob("*.db")))
        if self.target.kind == "baseline":
            assert self.db_path is not None
            return _count(self.db_path, "events") if self.db_path.exists() else 0
        return None

    def discard_data(self) -> None:
        """Delete what the server stored (trackd's data dir, the baseline's database) after it
        stopped; its log and config stay. A full run would otherwise leave gigabytes."""
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.stream is not None:
            asyncio.run(_stream_messages(self.stream, delete=True))
        if self.db_path is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)

    def role(self, pid: int, cmd: str) -> str:
        """A short name for one process of this server."""
        if self.target.kind == "nginx":
            return "master" if "master" in cmd else "worker"
        if self.target.kind == "trackd":
            return "gateway worker" if "trackd.server.worker" in cmd else "supervisor+pipeline"
        return "worker" if "multiprocessing" in cmd else "main"

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to this server's own process group, SIGKILL to it after `timeout`."""
        if self.proc.poll() is None:
            sig = signal.SIGQUIT if self.target.kind == "nginx" else signal.SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.notes.append("did not stop in time: killed")
        # Workers left behind by a master that exited are still in the group.
        deadline = time.monotonic() + 5
        while _group_alive(self.pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(self.pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait()


NATS_URL = os.environ.get("TRACKD_BENCH_NATS", "nats://127.0.0.1:4222")


async def _stream_messages(stream: str, *, delete: bool) -> int:
    """Messages in a NATS target's stream (accepted ones: every bench body is valid); with
    `delete`, the stream is removed afterwards."""
    import nats

    nc = await nats.connect(NATS_URL)
    try:
        js = nc.jetstream()
        count = int((await js.stream_info(stream)).state.messages)
        if delete:
            await _delete_stream(js, stream)
        return count
    finally:
        await nc.close()


async def remove_stream(stream: str) -> None:
    """Delete a stream of the NATS server at NATS_URL, with its key-value buckets."""
    import nats

    nc = await nats.connect(NATS_URL)
    try:
        await _delete_stream(nc.jetstream(), stream)
    finally:
        await nc.close()


async def _delete_stream(js: JetStreamContext, stream: str) -> None:
    """The stream and the key-value buckets trackd made for it (`KV_<stream>-privacy`,
    `KV_<stream>_pipeline`...)."""
    for info in await js.streams_info():
        name = info.config.name or ""
        if name == stream or name[:len(stream) + 4] in (f"KV_{stream}-", f"KV_{stream}_"):
            await js.delete_stream(name)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _count(path: Path, table: str, what: str = "count(*)") -> int:
    conn = sqlite3.connect(path, timeout=30)
    try:
        return int(conn.execute(f"SELECT coalesce({what}, 0) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def post(port: int, path: str, body: bytes, timeout: float = 5.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json",
                                          "Authorization": AUTH})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def start(target: Target, workdir: Path, port: int, *, baseline_venv: Path,
          gateway_only: bool = False) -> Running:
    """Start `target` on 127.0.0.1:`port` with a fresh state under `workdir`; wait until a
    real POST /v1/track answers 200."""
    if not port_free(port):
        raise RuntimeError(f"port {port} is busy: pick another --port-base")
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "server.log"
    env = dict(os.environ)
    data_dir = db_path = None
    stream = None
    if target.kind == "nginx":
        (workdir / "tmp").mkdir(exist_ok=True)
        conf = workdir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(workers=target.workers, dir=workdir, port=port))
        command = ["nginx", "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)]
    elif target.kind == "floor":
        data_dir = workdir / "data"
        data_dir.mkdir(exist_ok=True)
        env.update(FLOOR_DB=str(data_dir / "events"), FLOOR_WRITE_KEY=WRITE_KEY)
        command = [str(ROOT / ".venv" / "bin" / "uvicorn"), "app:app", "--host", "127.0.0.1",
                   "--port", str(port), "--workers", str(target.workers), "--http", "httptools",
                   "--loop", "uvloop", "--no-access-log", "--log-level", "warning",
                   "--app-dir", str(BENCH / "baselines" / "floor")]
    elif target.kind == "baseline":
        db_path = workdir / "events.db"
        env.update(BASELINE_DB=str(db_path), BASELINE_WRITE_KEY=WRITE_KEY)
        command = [str(baseline_venv / "bin" / "uvicorn"), "app:app", "--host", "127.0.0.1",
                   "--port", str(port), "--workers", str(target.workers), "--no-access-log",
                   "--log-level", "warning", "--app-dir",
                   str(BENCH / "baselines" / "naive_fastapi")]
    else:
        data_dir = workdir / "data"
        config = workdir / "trackd.toml"
        source_extra = ""
        if target.plan:
            (workdir / "plan.yaml").write_text(bodies.tracking_plan())
            source_extra = 'tracking_plan = "plan.yaml"\n'
        log_extra = ""
        if target.nats:
            stream = f"bench-{uuid.uuid4().hex[:10]}"
            log_extra = f'url = "{NATS_URL}"\nstream = "{stream}"\n'
        config.write_text(TRACKD_TOML.format(token=ADMIN_TOKEN, source=SOURCE, key=WRITE_KEY,
                                             extra=GATEWAY_ONLY if gateway_only else "",
                                             source_extra=source_extra, log_extra=log_extra))
        command = [str(ROOT / ".venv" / "bin" / "trackd"), "serve", "--config", str(config),
                   "--data-dir", str(data_dir), "--port", str(port),
                   "--workers", str(target.workers)]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    running = Running(target, port, proc, workdir, log_path, data_dir=data_dir, db_path=db_path,
                      stream=stream)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{target.name} exited at start-up ({proc.returncode}); "
                               f"see {log_path}")
        try:
            if post(port, "/v1/track", PROBE, timeout=2) == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            running.stop()
            raise RuntimeError(f"{target.name} did not answer 200 within 60 s; see {log_path}")
        time.sleep(0.1)
    return running
