"""Gateway workers hand admin requests to the pipeline process over its unix socket.

Responses are read whole, except event streams (`text/event-stream`: the console's live
view), which are passed on as they come until either side goes away; a stream that sends
nothing (not even its keep-alive comments) for STREAM_IDLE seconds is ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx

from trackd.gateway.app import Receive, Scope, Send

MAX_ADMIN_BODY = 1024 * 1024
STREAM_IDLE = 120.0
_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"host"}


class AdminProxy:
    def __init__(self, socket_path: str) -> None:
        # A jar that keeps no cookie: the client is shared by every visitor, so a cookie
        # it kept (the console's session) would be sent on behalf of everyone else.
        jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
        self._client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=socket_path),
                                         base_url="http://trackd-admin", timeout=STREAM_IDLE,
                                         cookies=jar)

        self.stopping: Callable[[], bool] = lambda: False
        """True once the worker drains: open event streams end then (browsers reconnect)."""

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_ADMIN_BODY:
                await _reply(send, 413, b'{"error":"request body too large"}')
                return
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP]
        query = scope.get("query_string", b"").decode("latin-1")
        url = scope["path"] + ("?" + query if query else "")
        request = self._client.build_request(scope["method"], url, headers=headers,
                                             content=bytes(body))
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError:
            await _reply(send, 503, b'{"error":"admin service unavailable, retry later"}')
            return
        out: list[Any] = [(k.encode("latin-1"), v.encode("latin-1"))
                          for k, v in response.headers.items()
                          if k.encode("latin-1").lower() not in _HOP
                          and k.lower() != "content-encoding"]
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            await _stream(response, out, receive, send, self.stopping)
            return
        try:
            content = await response.aread()
        except httpx.HTTPError:
            await _reply(send, 503, b'{"error":"admin service unavailable, retry later"}')
            return
        finally:
            await response.aclose()
        out.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": out})
        await send({"type": "http.response.body", "body": content})


async def _stream(response: httpx.Response, headers: list[Any], receive: Receive,
                  send: Send, stopping: Callable[[], bool]) -> None:
    """Pass an event stream on chunk by chunk until it ends, stalls, the client leaves or the
    worker stops."""

    async def pump() -> None:
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": headers})
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def client_gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def worker_stops() -> None:
        while not stopping():
            await asyncio.sleep(0.2)

    tasks = [asyncio.ensure_future(pump()), asyncio.ensure_future(client_gone()),
             asyncio.ensure_future(worker_stops())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError, OSError):
                await task
        await response.aclose()
    with contextlib.suppress(Exception):  # the client may be gone already
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _reply(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
