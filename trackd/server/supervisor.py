"""`trackd serve`: bind the socket, run the pipeline and admin API here, start the workers.

The supervisor owns the pipeline process (every log consumer and the admin API on a unix
socket) and N gateway worker processes, each listening on its own socket of the same address
(see `_bind`). On SIGTERM/SIGINT it stops the workers first (they finish in-flight commits),
then the pipeline stages in reverse. A worker that dies is started again on the same socket.

`role` (`trackd serve --role`): `all` runs both; on the NATS log, `gateway` runs only the
workers (no pipeline, no admin API) and `pipeline` only the pipeline and the admin API (no
tracking port), so that each may run on any number of hosts (`trackd.server.roles`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from trackd.errors import ConfigError
from trackd.observability import get_logger
from trackd.plans.plans import SourcePlans
from trackd.private import listen_unix, write_private
from trackd.server import orphans
from trackd.server.priority import lower_thread_priority
from trackd.server.protocol import Limits, SweepingServer, protocol_class
from trackd.server.roles import Role, check_role, claim_warehouse
from trackd.settings import Settings, to_json

if TYPE_CHECKING:
    from trackd.app import Pipeline

log = get_logger("supervisor")
READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class ServerInfo:
    host: str
    port: int
    pid: int
    admin_socket: str
    admin_port: int | None = None  # the admin listener's, when server.admin_host is set


class _AdminServer(SweepingServer):
    """The admin API server; signals are the supervisor's business, not uvicorn's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


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


def _bind(host: str, port: int, count: int) -> list[socket.socket]:
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


def serve(settings: Settings, on_ready: Callable[[ServerInfo], None],
          role: Role = "all") -> None:
    check_role(settings, role)
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
    sockets = _bind(settings.server.host, settings.server.port, settings.server.workers) \
        if role != "pipeline" else []
    try:
        admin = _bind_admin(settings) if role != "gateway" else None
    except ConfigError:
        for sock in sockets:
            sock.close()
        raise
    # The workers start now (Python, imports, the app: a second or more each) while this
    # process loads the pipeline and starts it (`_main`).
    workers: dict[int, subprocess.Popen[bytes]] = {}
    try:
        for index in range(len(sockets)):
            workers[index] = _spawn(run_dir, index, sockets[index], role)
        asyncio.run(_main(settings, run_dir, sockets, admin, on_ready, workers, role))
    finally:
        _stop_left(workers, settings.server.shutdown_timeout)  # when `_main` did not get to it
        for sock in [*sockets, *([admin] if admin else [])]:
            sock.close()
        for gone in [run_dir / "server.json", run_dir / "admin.sock", *run_dir.glob("ready-*"),
                     *run_dir.glob("worker-*.pid")]:
            gone.unlink(missing_ok=True)


def _bind_admin(settings: Settings) -> socket.socket | None:
    """The admin listener's socket, when `server.admin_host` is set."""
    host = settings.server.admin_host
    if not host:
        return None
    sock = _bound(socket.AF_INET6 if ":" in host else socket.AF_INET, host,
                  settings.server.admin_port, reuse_port=False)
    sock.listen(128)
    return sock


def _admin_listener(settings: Settings, pipeline: Pipeline) -> _AdminServer:
    """The admin API on its own TCP address, with the gateway's bounds on connections."""
    return _AdminServer(uvicorn.Config(
        pipeline.admin, http=protocol_class(Limits.of(settings.server)), ws="none",
        lifespan="off", log_level="warning", log_config=None, access_log=False,
        server_header=False, proxy_headers=False))


async def _main(settings: Settings, run_dir: Path, sockets: list[socket.socket],
                admin_sock: socket.socket | None, on_ready: Callable[[ServerInfo], None],
                workers: dict[int, subprocess.Popen[bytes]], role: Role = "all") -> None:
    from trackd.app import Pipeline  # here: the workers are already starting meanwhile

    loop = asyncio.get_running_loop()
    # The stages' blocking work (archive files, ledgers, log reads) runs in the default
    # executor: at a lower priority, so that under load the gateway workers keep the cores.
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(
        max_workers=8, thread_name_prefix="pipeline", initializer=lower_thread_priority))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _forward, workers, signal.SIGHUP)
    # The workers take requests as soon as they are up, and answer admin calls with 503 until
    # the admin socket is there (server.json, and so the `trackd` commands, come once all is).
    pipeline = Pipeline(settings, run_dir) if role != "gateway" else None
    release = await claim_warehouse(settings) if pipeline is not None else None
    admin_sock_path = run_dir / "admin.sock"
    admin: _AdminServer | None = None
    admin_task: asyncio.Task[None] | None = None
    listener: _AdminServer | None = None
    listener_task: asyncio.Task[None] | None = None
    if pipeline is not None:
        try:
            await pipeline.start()
        except BaseException:
            if release is not None:
                await release()
            raise
        admin = _AdminServer(uvicorn.Config(pipeline.admin, lifespan="off", log_level="warning",
                                            log_config=None, access_log=False))
        admin_task = asyncio.create_task(admin.serve(sockets=[listen_unix(admin_sock_path)]))
        listener = _admin_listener(settings, pipeline) if admin_sock else None
        listener_task = asyncio.create_task(listener.serve(sockets=[admin_sock])) if (
            listener and admin_sock) else None
    try:
        await _wait_ready(run_dir, workers, stop)
        if stop.is_set():
            return
        port = sockets[0].getsockname()[1] if sockets else 0
        info = ServerInfo(settings.server.host, int(port), os.getpid(),
                          str(admin_sock_path) if pipeline is not None else "",
                          admin_sock.getsockname()[1] if admin_sock else None)
        # Written whole under a temporary name, then renamed: whoever waits for the file
        # (the CLI, scripts, tests) never reads it half written.
        partial = run_dir / ".server.json.tmp"
        partial.write_text(json.dumps(info.__dict__))
        partial.replace(run_dir / "server.json")
        on_ready(info)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            for index, proc in list(workers.items()):
                if proc.poll() is not None and not stop.is_set():
                    log.warning("gateway worker exited; starting it again",
                                extra={"worker": index, "code": proc.returncode})
                    workers[index] = _spawn(run_dir, index, sockets[index], role)
    finally:
        if pipeline is not None:
            pipeline.stopping()
        await asyncio.to_thread(_stop_left, workers, settings.server.shutdown_timeout)
        for server, task in [(admin, admin_task), (listener, listener_task)]:
            if server is not None and task is not None:
                server.should_exit = True
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 5)
        if pipeline is not None:
            await pipeline.stop()
        if release is not None:
            await release()


def _forward(workers: dict[int, subprocess.Popen[bytes]], sig: signal.Signals) -> None:
    """Pass a signal on to every running worker (SIGHUP: reload the tracking plans)."""
    log.info("signal forwarded to the gateway workers", extra={"signal": sig.name})
    for proc in workers.values():
        if proc.poll() is None:
            proc.send_signal(sig)


def _spawn(run_dir: Path, index: int, sock: socket.socket,
           role: Role = "all") -> subprocess.Popen[bytes]:
    (run_dir / f"ready-{index}").unlink(missing_ok=True)
    fd = sock.fileno()
    proc = subprocess.Popen(
        [sys.executable, "-m", orphans.WORKER_MODULE, str(run_dir), str(index), str(fd),
         role, str(os.getpid())], pass_fds=(fd,), start_new_session=False)
    orphans.pid_file(run_dir, index).write_text(str(proc.pid))
    return proc


async def _wait_ready(run_dir: Path, workers: dict[int, subprocess.Popen[bytes]],
                      stop: asyncio.Event) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not stop.is_set():
        if all((run_dir / f"ready-{i}").exists() for i in workers):
            return
        for index, proc in workers.items():
            if proc.poll() is not None:
                raise ConfigError(f"gateway worker {index} failed to start "
                                  f"(exit code {proc.returncode})")
        if time.monotonic() > deadline:
            raise ConfigError("gateway workers did not start in time")
        await asyncio.sleep(0.05)


def _stop_left(workers: dict[int, subprocess.Popen[bytes]], timeout: float) -> None:
    """Stop the workers still running: SIGTERM (they finish in-flight commits), SIGKILL for
    any still there `timeout` + 5 s later."""
    for proc in workers.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout + 5
    for proc in workers.values():
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
