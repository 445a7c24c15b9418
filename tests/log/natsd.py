"""NATS servers for the log tests: the machine's server, or our own from the `nats-server` binary.

`NatsNode` runs one JetStream server on free loopback ports in a temp dir (optionally as one
node of a cluster); `Cluster` starts three of them. Kill one with `kill()` (SIGKILL) and bring
it back with `start()`: its data dir is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import nats
import nats.js.errors

MACHINE_NATS = "nats://127.0.0.1:4222"


def nats_binary() -> str | None:
    return shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if Path(p).exists()), None)


def machine_nats_up() -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", 4222)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def unique_stream() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


BUCKETS = ("-privacy", "-regulations", "_pipeline")
"""The key-value buckets trackd makes for a stream, after its name."""


def delete_stream(name: str) -> None:
    """Remove a test's stream from the machine's server, with the key-value buckets trackd
    made for it (`KV_<stream>-privacy`, `KV_<stream>_pipeline`...)."""
    async def delete() -> None:
        nc = await nats.connect(MACHINE_NATS)
        js = nc.jetstream()
        for found in (name, *(f"KV_{name}{tail}" for tail in BUCKETS)):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(found)
        await nc.close()

    asyncio.run(delete())


class NatsNode:
    def __init__(self, root: Path, name: str, *, port: int | None = None,
                 cluster_port: int | None = None, routes: list[int] | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "nats.conf"
        lines = [f"server_name: {name}", "host: 127.0.0.1", f"port: {self.port}",
                 f'jetstream {{ store_dir: "{self.dir / "js"}" }}']
        if cluster_port is not None:
            route_list = ", ".join(f"nats://127.0.0.1:{p}" for p in routes or [])
            lines.append(f"cluster {{ name: trackd-test, listen: 127.0.0.1:{cluster_port}, "
                         f"routes: [{route_list}] }}")
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsNode:
        binary = nats_binary()
        assert binary is not None, "nats-server is not installed"
        with (self.dir / "server.log").open("ab") as out:
            self.proc = subprocess.Popen([binary, "-c", str(self.conf)], stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            assert self.proc.poll() is None, (self.dir / "server.log").read_text()[-2000:]
            time.sleep(0.05)
        raise AssertionError(f"nats-server {self.name} did not listen on {self.port}")

    def kill(self) -> None:
        """kill -9, as a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class Cluster:
    """Three JetStream servers routed to each other on loopback."""

    def __init__(self, root: Path, size: int = 3) -> None:
        cluster_ports = [free_port() for _ in range(size)]
        self.nodes = [NatsNode(root, f"n{i + 1}", cluster_port=cluster_ports[i],
                               routes=[p for j, p in enumerate(cluster_ports) if j != i])
                      for i in range(size)]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def start(self) -> Cluster:
        for node in self.nodes:
            node.start()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
