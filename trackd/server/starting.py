"""The admin API while the pipeline starts.

`trackd serve` says it is ready once the gateway workers answer (their log is open, so a 200
means the message is stored), and only then loads and starts the pipeline. Meanwhile the admin
socket already listens, with this app in front: `/readyz` answers 503 with
`"status": "starting"` at once, and every other admin request waits for the pipeline and is
then answered by the admin API (a `trackd` command run just after the banner works, only a
little later). Should the pipeline not come up within `wait` seconds, they get 503.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Any, Any, Any], Awaitable[None]]  # an ASGI app (starlette types its own)

STARTING = {"ready": False, "status": "starting", "reason": "the pipeline is starting",
            "stages": []}


class StartingAdmin:
    def __init__(self, wait: float) -> None:
        self._wait = wait
        self._up = asyncio.Event()
        self._app: App | None = None

    def open(self, app: App) -> None:
        """The pipeline is running: `app` (the admin API) answers from now on."""
        self._app = app
        self._up.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            if scope.get("path") == "/readyz":
                await _reply(send, 503, STARTING)
                return
            try:
                await asyncio.wait_for(self._up.wait(), self._wait)
            except TimeoutError:
                message = "the pipeline is still starting, retry later"
                await _reply(send, 503, {"success": False, "error": {
                    "type": "unavailable", "message": message}, "code": "unavailable",
                    "message": message})
                return
        app = self._app
        assert app is not None
        await app(scope, receive, send)


async def _reply(send: Send, status: int, doc: dict[str, Any]) -> None:
    body = json.dumps(doc).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
