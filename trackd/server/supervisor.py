"""`trackd serve`: bind the socket, start the workers, then run the pipeline and admin API here.

The supervisor owns the pipeline process (every log consumer and the admin API on a unix
socket) and N gateway worker processes, each listening on its own socket of the same address
(see `_bind`). On SIGTERM/SIGINT it stops the workers first (they finish in-flight commits),
then the pipeline stages in reverse. A worker that dies is started again on the same socket.

Start-up order (`_main`): the sockets are bound and the workers spawned before anything of the
pipeline is imported; the server is ready (`on_ready`, the banner, server.json with
`"pipeline": "starting"`) once every worker answers, its log open. Only then does this process
import and start the pipeline (DuckDB, pyarrow, the destinations, the archive: most of a
start's time); messages accepted meanwhile wait in the log. Until it runs, `/readyz` says
`"starting"` and other admin requests wait for it (`trackd.server.starting`); server.json is
then written again with `"pipeline": "running"`.

`role` (`trackd serve --role`): `all` runs both; on the NATS log, `gateway` runs only the
workers (no pipeline, no admin API) and `pipeline` only the pipeline and the admin API (no
tracking port, ready once the pipeline runs), so that each may run on any number of hosts
(`trackd.server.roles`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
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
from typing import TYPE_CHECKING, Any

from trackd.errors import ConfigError
from trackd.observability import get_logger
from trackd.plans.plans import SourcePlans
from trackd.private import listen_unix, write_private
from trackd.server import orphans
from trackd.server.priority import lower_thread_priority
from trackd.server.roles import Role, check_role, claim_warehouse
from trackd.settings import Settings, to_json

if TYPE_CHECKING:
    from trackd.app import Pipeline
    from trackd.server.protocol import SweepingServer
    from trackd.server.starting import StartingAdmin

log = get_logger("supervisor")
READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class ServerInfo:
    host: str
    port: int
    pid: int
    admin_socket: str
    admin_port: int | None = None  # the admin listener's, when server.admin_host is set
    pipeline: str = "running"  # "starting" until it runs; "none" with --role gateway


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
                      doc.get("admin_port"), doc.get("pipeline", "running"))


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
    admins: list[socket.socket] = []
    try:
        if role != "gateway":
            # Both listen now: a request that comes before the admin API serves them waits.
            admins.append(listen_unix(run_dir / "admin.sock"))
            admins.extend([tcp] if (tcp := _bind_admin(settings)) else [])
    except (ConfigError, OSError):
        for sock in [*sockets, *admins]:
            sock.close()
        (run_dir / "admin.sock").unlink(missing_ok=True)
        raise
    # The workers start now (Python, imports, the app: half a second or more each); the
    # pipeline is loaded once they answer (`_main`).
    workers: dict[int, subprocess.Popen[bytes]] = {}
    try:
        for index in range(len(sockets)):
            workers[index] = _spawn(run_dir, index, sockets[index], role)
        asyncio.run(_main(settings, run_dir, sockets, admins, on_ready, workers, role))
    finally:
        _stop_left(workers, settings.server.shutdown_timeout)  # when `_main` did not get to it
        for sock in [*sockets, *admins]:
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


def _admin_servers(settings: Settings, admins: list[socket.socket], app: StartingAdmin
                   ) -> list[tuple[SweepingServer, asyncio.Task[None]]]:
    """The admin API served on its unix socket and, when `server.admin_host` is set, on its
    TCP address with the gateway's bounds on connections."""
    import uvicorn

    from trackd.server.protocol import Limits, SweepingServer, protocol_class

    class AdminServer(SweepingServer):
        """Signals are the supervisor's business, not uvicorn's."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    quiet: dict[str, Any] = {"lifespan": "off", "log_level": "warning", "log_config": None,
                             "access_log": False}
    configs = [uvicorn.Config(app, **quiet)]
    if len(admins) > 1:
        configs.append(uvicorn.Config(
            app, http=protocol_class(Limits.of(settings.server)), ws="none",
            server_header=False, proxy_headers=False, **quiet))
    servers = [AdminServer(config) for config in configs]
    return [(server, asyncio.create_task(server.serve(sockets=[sock])))
            for server, sock in zip(servers, admins, strict=True)]


def _load_pipeline() -> type[Pipeline]:
    from trackd.app import Pipeline

    return Pipeline


def _announce(run_dir: Path, info: ServerInfo) -> None:
    """server.json, written whole under a temporary name, then renamed: whoever waits for the
    file (the CLI, scripts, tests) never reads it half written."""
    partial = run_dir / ".server.json.tmp"
    partial.write_text(json.dumps(info.__dict__))
    partial.replace(run_dir / "server.json")


async def _main(settings: Settings, run_dir: Path, sockets: list[socket.socket],
                admins: list[socket.socket], on_ready: Callable[[ServerInfo], None],
                workers: dict[int, subprocess.Popen[bytes]], role: Role = "all") -> None:
    loop = asyncio.get_running_loop()
    # The stages' blocking work (archive files, ledgers, log reads) runs in the default
    # executor: at a lower priority, so that under load the gateway workers keep the cores.
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(
        max_workers=8, thread_name_prefix="pipeline", initializer=lower_thread_priority))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _forward, workers, signal.SIGHUP)
    port = sockets[0].getsockname()[1] if sockets else 0
    info = ServerInfo(settings.server.host, int(port), os.getpid(),
                      str(run_dir / "admin.sock") if admins else "",
                      admins[1].getsockname()[1] if len(admins) > 1 else None,
                      "starting" if admins else "none")
    pipeline: Pipeline | None = None
    release = None
    servers: list[tuple[SweepingServer, asyncio.Task[None]]] = []
    try:
        await _wait_ready(run_dir, workers, stop)
        if stop.is_set():
            return
        if role != "pipeline":  # ready: the tracking API answers, its log open
            _announce(run_dir, info)
            on_ready(info)
        if admins:
            from trackd.server.starting import StartingAdmin

            gate = StartingAdmin(READY_TIMEOUT)
            servers = _admin_servers(settings, admins, gate)
            # In a thread: the admin socket answers /readyz meanwhile.
            loaded = (await asyncio.to_thread(_load_pipeline))(settings, run_dir)
            release = await claim_warehouse(settings)
            await loaded.start()
            pipeline = loaded  # started: stopped on the way out
            gate.open(pipeline.admin)
            info = dataclasses.replace(info, pipeline="running")
            _announce(run_dir, info)
            if role == "pipeline":
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
        for server, task in servers:
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
