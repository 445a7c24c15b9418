"""`trackd serve`: run the pipeline and admin API here, and watch the gateway workers.

The supervisor owns the pipeline process (every log consumer and the admin API on a unix
socket) and N gateway worker processes, each listening on its own socket of the same address
(see `launch.bind`). `launch.launch` binds the sockets and starts the workers first, so they
start while this module and the pipeline load. On SIGTERM/SIGINT it stops the workers first
(they finish in-flight commits), then the pipeline stages in reverse. A worker that dies is
started again on the same socket.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn

from trackd.app import Pipeline
from trackd.errors import ConfigError
from trackd.observability import get_logger
from trackd.private import listen_unix
from trackd.server.launch import Launched, ServerInfo, launch, spawn
from trackd.server.priority import lower_thread_priority
from trackd.server.protocol import Limits, SweepingServer, protocol_class
from trackd.settings import Settings

log = get_logger("supervisor")
READY_TIMEOUT = 60.0


class _AdminServer(SweepingServer):
    """The admin API server; signals are the supervisor's business, not uvicorn's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _admin_listener(settings: Settings, pipeline: Pipeline) -> _AdminServer:
    """The admin API on its own TCP address, with the gateway's bounds on connections."""
    return _AdminServer(uvicorn.Config(
        pipeline.admin, http=protocol_class(Limits.of(settings.server)), ws="none",
        lifespan="off", log_level="warning", log_config=None, access_log=False,
        server_header=False, proxy_headers=False))


def serve(settings: Settings, on_ready: Callable[[ServerInfo], None],
          launched: Launched | None = None) -> None:
    """Run the server until SIGTERM/SIGINT: what `launched` started (else launched here)."""
    launched = launched or launch(settings)
    run_dir = launched.run_dir
    try:
        asyncio.run(_main(launched, on_ready))
    finally:
        launched.close()
        for gone in [run_dir / "server.json", run_dir / "admin.sock", *run_dir.glob("ready-*"),
                     *run_dir.glob("worker-*.pid")]:
            gone.unlink(missing_ok=True)


async def _main(launched: Launched, on_ready: Callable[[ServerInfo], None]) -> None:
    settings, run_dir = launched.settings, launched.run_dir
    sockets, admin_sock, workers = launched.sockets, launched.admin, launched.workers
    loop = asyncio.get_running_loop()
    # The stages' blocking work (archive files, ledgers, log reads) runs in the default
    # executor: at a lower priority, so that under load the gateway workers keep the cores.
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(
        max_workers=8, thread_name_prefix="pipeline", initializer=lower_thread_priority))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _forward, workers, signal.SIGHUP)
    # The workers are starting meanwhile (`serve` stops them if the pipeline does not start);
    # they take requests as soon as they are up, and answer admin calls with 503 until the
    # admin socket is there (server.json, and so the `trackd` commands, come once all is).
    pipeline = Pipeline(settings, run_dir)
    await pipeline.start()
    admin_sock_path = run_dir / "admin.sock"
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
        host, port = sockets[0].getsockname()[:2]
        info = ServerInfo(settings.server.host, int(port), os.getpid(), str(admin_sock_path),
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
                    workers[index] = spawn(run_dir, index, sockets[index])
    finally:
        pipeline.stopping()
        await _stop_workers(workers, settings.server.shutdown_timeout)
        for server, task in [(admin, admin_task), (listener, listener_task)]:
            if server is not None and task is not None:
                server.should_exit = True
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 5)
        await pipeline.stop()


def _forward(workers: dict[int, subprocess.Popen[bytes]], sig: signal.Signals) -> None:
    """Pass a signal on to every running worker (SIGHUP: reload the tracking plans)."""
    log.info("signal forwarded to the gateway workers", extra={"signal": sig.name})
    for proc in workers.values():
        if proc.poll() is None:
            proc.send_signal(sig)


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


async def _stop_workers(workers: dict[int, subprocess.Popen[bytes]], timeout: float) -> None:
    for proc in workers.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout + 5
    while any(p.poll() is None for p in workers.values()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for proc in workers.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
