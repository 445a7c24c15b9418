"""One gateway worker process: the tracking API on its listening socket, writing its own shard.

Started by the supervisor as `python -m trackd.server.worker RUN_DIR INDEX FD PARENT_PID`.
It ends when the supervisor dies (see `trackd.server.orphans`).

On SIGTERM/SIGINT the worker first drains for `server.drain_seconds`: new tracking requests get
503 + Retry-After and /readyz turns 503 (so a load balancer moves away) while requests already in
flight finish; then uvicorn's graceful shutdown closes the listener and the log writer
commits what is queued. A second SIGINT stops at once, as uvicorn does.
"""

from __future__ import annotations

import contextlib
import gc
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType

import uvicorn

from trackd import app as composition
from trackd.gateway.app import Gateway
from trackd.observability import configure_logging
from trackd.private import restrict_process
from trackd.server.orphans import die_with_parent, parent_gone
from trackd.server.protocol import Limits, SweepingServer, protocol_class
from trackd.settings import from_json

PARENT_CHECK_TICKS = 10  # uvicorn ticks (0.1 s) between two checks that the supervisor lives
GC_THRESHOLD = (100_000, 50, 100)
"""gc thresholds for a worker. A request's objects are short-lived and hold no cycles, so
they die by reference counting; the default first threshold (700) ran a collection every few
requests, each one scanning every young object."""


class _Worker(SweepingServer):
    def __init__(self, config: uvicorn.Config, gateway: Gateway, drain: float,
                 parent: int) -> None:
        super().__init__(config)
        self._gateway = gateway
        self._drain = drain
        self._parent = parent
        self._stop_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._stop_at is None:
            # The supervisor repeats SIGTERM to the whole group: only SIGINT escalates.
            self._gateway.draining = True
            self._stop_at = time.monotonic() + self._drain
        elif sig == signal.SIGINT:
            super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if counter % PARENT_CHECK_TICKS == 0 and self._stop_at is None and parent_gone(
                self._parent):
            self.handle_exit(signal.SIGTERM, None)  # the supervisor died: drain and exit
        if self._stop_at is not None and time.monotonic() >= self._stop_at:
            self.should_exit = True
        return await super().on_tick(counter)


def main(argv: list[str]) -> None:
    # run_dir index fd [role] parent: the supervisor's pid comes last (orphans.py reads it)
    run_dir, index, fd, parent = Path(argv[0]), int(argv[1]), int(argv[2]), int(argv[-1])
    role = argv[3] if len(argv) > 4 else "all"
    die_with_parent(parent)
    restrict_process()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the gateway handles it (plan reload)
    settings = from_json((run_dir / "settings.json").read_text())
    configure_logging(settings.server.log_level)
    sock = socket.socket(fileno=fd)
    # --role gateway: no pipeline and so no admin API on this host (/api/* is not proxied)
    parts = composition.build_gateway(settings, index, run_dir,
                                      admin=role != "gateway")
    # proxy_headers=False: uvicorn would otherwise trust X-Forwarded-For from 127.0.0.1;
    # the gateway trusts it only from server.trusted_proxies.
    # http: uvicorn's httptools protocol with bounds on headers, time and connections.
    config = uvicorn.Config(parts.gateway, loop="uvloop", lifespan="on", ws="none",
                            http=protocol_class(Limits.of(settings.server)),
                            log_level="warning", log_config=None, access_log=False,
                            server_header=False, date_header=False, backlog=2048,
                            proxy_headers=False,
                            timeout_graceful_shutdown=int(settings.server.shutdown_timeout))
    server = _Worker(config, parts.gateway,
                     min(settings.server.drain_seconds, settings.server.shutdown_timeout), parent)
    gc.freeze()  # what start-up built lives as long as the worker: never scan it again
    gc.set_threshold(*GC_THRESHOLD)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])


if __name__ == "__main__":
    main(sys.argv[1:])
