"""What `trackd serve` does before the pipeline: cheap, so the gateway workers start early.

`launch(settings)` checks that no server runs on the data dir, stops workers a killed server
left, clears the last run's files, checks the tracking plans, writes the run's settings, binds
the listening sockets and starts the gateway workers. It imports nothing heavy (no pipeline,
no uvicorn): the CLI calls it first and imports the supervisor (the pipeline and its
dependencies, a second or more) while the workers start in their own processes. The
supervisor (`trackd.server.supervisor.serve`) then runs the pipeline with what it launched.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from trackd.errors import ConfigError
from trackd.plans.plans import SourcePlans
from trackd.private import write_private
from trackd.server import orphans
from trackd.settings import Settings, to_json


@dataclass(frozen=True)
class ServerInfo:
    host: str
    port: int
    pid: int
    admin_socket: str
    admin_port: int | None = None  # the admin listener's, when server.admin_host is set


def run_dir_of(settings: Settings) -> Path:
    return settings.data_dir / "run"


def read_server_info(settings: Settings) -> ServerInfo | None:
    """The running server on this data dir, if any (its pid is alive)."""
    path = run_dir_of(settings) / "server.json"
    try:
        doc = json.loads(path.read_text())
        os.kill(int(doc["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return ServerInfo(doc["host"], int(doc["port"]), int(doc["pid"]), doc["admin_socket"],
                      doc.get("admin_port"))


def bind(host: str, port: int, count: int) -> list[socket.socket]:
    """The listening sockets of `count` gateway workers, one per worker, on one address.

    With one socket shared by every worker, whichever worker wakes first accepts every
    connection waiting, so a burst of keep-alive connections (a proxy's pool, a benchmark's
    clients) can all land on one worker and leave the others idle for as long as they stay
    open: 17 of 17 connections in 1 of 11 measured runs, 14 or more of 16 in 3 (the batched
    throughput then drops by a third). On Linux each worker gets its own socket
    (SO_REUSEPORT), and the kernel spreads new connections over them by a hash of their
    addresses. A plain bind first checks the address is free: SO_REUSEPORT alone would let
    another process of the same user share the port without a word.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    spread = count > 1 and sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")
    probe = _bound(family, host, port, reuse_port=False)
    if spread:
        port = probe.getsockname()[1]  # the port the system chose, for port 0
        probe.close()
        sockets: list[socket.socket] = []
        try:
            for _ in range(count):
                sockets.append(_bound(family, host, port, reuse_port=True))
        except ConfigError:
            for sock in sockets:
                sock.close()
            raise
    else:
        sockets = [probe] * count
    for sock in dict.fromkeys(sockets):
        sock.listen(4096)
        sock.set_inheritable(True)
    return sockets


def _bound(family: socket.AddressFamily, host: str, port: int, *,
           reuse_port: bool) -> socket.socket:
    """A socket bound to host:port, not listening yet; ConfigError when the address is taken."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        holder = orphans.holder_of(port) if exc.errno == errno.EADDRINUSE and port else None
        held = f" (held by {holder})" if holder else ""
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}{held}") from None
    return sock


@dataclass
class Launched:
    """A server's sockets and its gateway workers, started and not yet waited for."""

    settings: Settings
    run_dir: Path
    sockets: list[socket.socket]
    admin: socket.socket | None
    workers: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def close(self) -> None:
        """Stop any worker still running (SIGTERM, then SIGKILL after the shutdown timeout)
        and close the sockets: what is left when the server did not get to run."""
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.server.shutdown_timeout + 5
        for proc in self.workers.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for sock in {id(s): s for s in [*self.sockets, *([self.admin] if self.admin else [])]
                     }.values():
            sock.close()


def launch(settings: Settings) -> Launched:
    """Everything before the pipeline, the gateway workers started; ConfigError (one line)
    when the server cannot start."""
    run_dir = run_dir_of(settings)
    if read_server_info(settings) is not None:
        raise ConfigError(f"a trackd server is already running on {settings.data_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    orphans.stop_leftover_workers(run_dir, settings.server.shutdown_timeout + 5)
    for stale in [*run_dir.glob("ready-*"), *run_dir.glob("metrics/gateway-*.json"),
                  *run_dir.glob("plans/gateway-*.json"), run_dir / "admin.sock",
                  run_dir / "server.json"]:
        stale.unlink(missing_ok=True)
    SourcePlans(settings.sources).load()  # a broken tracking plan stops here, in one line
    write_private(run_dir / "settings.json", to_json(settings))
    sockets = bind(settings.server.host, settings.server.port, settings.server.workers)
    try:
        admin = bind_admin(settings)
    except ConfigError:
        for sock in sockets:
            sock.close()
        raise
    out = Launched(settings, run_dir, sockets, admin)
    try:
        for index in range(settings.server.workers):
            out.workers[index] = spawn(run_dir, index, sockets[index])
    except BaseException:
        out.close()
        raise
    return out


def bind_admin(settings: Settings) -> socket.socket | None:
    """The admin listener's socket, when `server.admin_host` is set."""
    host = settings.server.admin_host
    if not host:
        return None
    sock = _bound(socket.AF_INET6 if ":" in host else socket.AF_INET, host,
                  settings.server.admin_port, reuse_port=False)
    sock.listen(128)
    return sock


def spawn(run_dir: Path, index: int, sock: socket.socket) -> subprocess.Popen[bytes]:
    (run_dir / f"ready-{index}").unlink(missing_ok=True)
    fd = sock.fileno()
    proc = subprocess.Popen(
        [sys.executable, "-m", orphans.WORKER_MODULE, str(run_dir), str(index), str(fd),
         str(os.getpid())], pass_fds=(fd,), start_new_session=False)
    orphans.pid_file(run_dir, index).write_text(str(proc.pid))
    return proc
