"""One gateway worker process: the tracking API on its listening socket, writing its own shard.

Started by the supervisor as `python -m trackd.server.worker RUN_DIR INDEX FD`.

On SIGTERM/SIGINT the worker first drains for DRAIN_SECONDS: new tracking requests get 503 +
Retry-After and /readyz turns 503 (so a load balancer moves away) while requests already in
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
from trackd.settings import from_json

DRAIN_SECONDS = 0.5
GC_THRESHOLD = (100_000, 50, 100)
"""gc thresholds for a worker. A request's objects are short-lived and hold no cycles, so
they die by reference counting; the default first threshold (700) ran a collection every few
requests, each one scanning every young object."""


class _Worker(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, gateway: Gateway, drain: float) -> None:
        super().__init__(config)
        self._gateway = gateway
        self._drain = drain
        self._stop_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._stop_at is None:
            # The supervisor repeats SIGTERM to the whole group: only SIGINT escalates.
            self._gateway.draining = True
            self._stop_at = time.monotonic() + self._drain
        elif sig == signal.SIGINT:
            super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._stop_at is not None and time.monotonic() >= self._stop_at:
            self.should_exit = True
        return await super().on_tick(counter)


def main(argv: list[str]) -> None:
    run_dir, index, fd = Path(argv[0]), int(argv[1]), int(argv[2])
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the gateway handles it (plan reload)
    configure_logging()
    settings = from_json((run_dir / "settings.json").read_text())
    sock = socket.socket(fileno=fd)
    parts = composition.build_gateway(settings, index, run_dir)
    # proxy_headers=False: uvicorn would otherwise trust X-Forwarded-For from 127.0.0.1;
    # the gateway trusts it only from server.trusted_proxies.
    config = uvicorn.Config(parts.gateway, loop="uvloop", http="httptools", lifespan="on",
                            log_level="warning", access_log=False, server_header=False,
                            date_header=False, backlog=2048, proxy_headers=False,
                            timeout_graceful_shutdown=int(settings.server.shutdown_timeout),
                            limit_concurrency=4096, h11_max_incomplete_event_size=64 * 1024)
    server = _Worker(config, parts.gateway,
                     min(DRAIN_SECONDS, settings.server.shutdown_timeout))
    gc.freeze()  # what start-up built lives as long as the worker: never scan it again
    gc.set_threshold(*GC_THRESHOLD)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])


if __name__ == "__main__":
    main(sys.argv[1:])
