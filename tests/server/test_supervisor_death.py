"""Gateway workers end when their supervisor is killed, and a new server starts cleanly on
the same data dir: it stops a worker a dead server left, or names whoever holds the port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable

from tests.conftest import Server, eventually
from tests.gateway.helpers import GATEWAY_CONFIG
from tests.reliability.helpers import worker_pids
from trackd.server.orphans import command_line, stop_leftover_workers


def _kill_supervisor(server: Server) -> None:
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(10)
    server.proc = None


def _gone(pids: list[int]) -> bool:
    return all(command_line(pid) is None for pid in pids)


def test_workers_exit_when_the_supervisor_is_killed_and_a_restart_works(
        make_server: Callable[..., Server]) -> None:
    server = make_server(config=GATEWAY_CONFIG, workers=2)
    workers = worker_pids(server)
    assert len(workers) == 2
    port = server.port
    _kill_supervisor(server)
    eventually(lambda: _gone(workers), timeout=30)
    server.start()  # same data dir, same port
    assert server.port == port
    with server.client() as client:
        assert client.get("/readyz").status_code == 200


def test_a_new_server_stops_a_worker_a_dead_server_left(
        make_server: Callable[..., Server]) -> None:
    """A worker stopped (SIGSTOP) while its supervisor is killed cannot act on its parent's
    death: it still holds the port when the next server starts, which stops it first."""
    server = make_server(config=GATEWAY_CONFIG)
    [worker] = worker_pids(server)
    os.kill(worker, signal.SIGSTOP)
    try:
        _kill_supervisor(server)
        assert command_line(worker) is not None
        server.start()
    finally:
        if command_line(worker) is not None:
            os.kill(worker, signal.SIGKILL)
    assert command_line(worker) is None
    with server.client() as client:
        assert client.get("/readyz").status_code == 200
    log = server.output.read_text()
    assert "stopping a gateway worker left by a server that is no longer running" in log
    assert str(worker) in log


def test_a_port_held_by_another_process_is_named(make_server: Callable[..., Server]) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import socket, sys, time\n"
         "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
         "print(s.getsockname()[1], flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
        server = make_server(config=GATEWAY_CONFIG, start=False)
        result = server.run_cli("serve", "--port", str(port), check=False)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use " \
               f"(held by pid {holder.pid}: " in lines[0]
    finally:
        holder.kill()
        holder.communicate()


def test_workers_of_a_live_supervisor_are_never_taken_for_leftovers(
        make_server: Callable[..., Server]) -> None:
    server = make_server(config=GATEWAY_CONFIG, workers=2)
    workers = worker_pids(server)
    assert stop_leftover_workers(server.data_dir / "run", timeout=1) == []
    assert all(command_line(pid) is not None for pid in workers)
    with server.client() as client:
        assert client.get("/readyz").status_code == 200
