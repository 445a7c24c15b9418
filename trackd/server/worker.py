"""One gateway worker process: the tracking API on the shared socket, writing its own shard.

Started by the supervisor as `python -m trackd.server.worker RUN_DIR INDEX FD`.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from pathlib import Path

import uvicorn

from trackd import app as composition
from trackd.settings import from_json


def main(argv: list[str]) -> None:
    run_dir, index, fd = Path(argv[0]), int(argv[1]), int(argv[2])
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
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])


if __name__ == "__main__":
    main(sys.argv[1:])
