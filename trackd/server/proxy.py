"""Gateway workers hand admin requests to the pipeline process over its unix socket.

The request target goes on byte for byte (`raw_path` and the query string as the client sent
them), so an id with `?`, `#`, `%` or a control character percent-encoded reaches the admin API
exactly; nothing is decoded and encoded again here. The request is made on httpx's transport
directly: no client, so no log line per request, no internal host name in the log, and no
cookie jar (one visitor's console session is never sent on behalf of another).

Responses are read whole, except event streams (`text/event-stream`: the console's live
view), which are passed on as they come until either side goes away; a stream that sends
nothing (not even its keep-alive comments) for STREAM_IDLE seconds is ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from trackd.gateway.app import Receive, Scope, Send

if TYPE_CHECKING:
    import httpx

MAX_ADMIN_BODY = 1024 * 1024
_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"host",
        b"upgrade", b"te", b"trailer", b"proxy-connection", b"x-trackd-peer"}
STREAM_IDLE = 120.0
_TIMEOUT = {"connect": 5.0, "read": STREAM_IDLE, "write": 120.0, "pool": 120.0}


class AdminProxy:
    """httpx is imported at the first admin request, not when the worker starts (a tenth of a
    second of a worker's start, and most workers never proxy anything)."""

    def __init__(self, socket_path: str) -> None:
        self._socket_path = socket_path
        self._transport: httpx.AsyncHTTPTransport | None = None
        self.stopping: Callable[[], bool] = lambda: False
        """True once the worker drains: open event streams end then (browsers reconnect)."""

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._transport.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        import httpx

        if self._transport is None:
            self._transport = httpx.AsyncHTTPTransport(uds=self._socket_path)
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
        target = scope.get("raw_path") or scope["path"].encode("utf-8")
        query: bytes = scope.get("query_string", b"")
        if query:
            target += b"?" + query
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP]
        if scope.get("client"):  # the admin API rate-limits failed logins per client
            headers.append((b"x-trackd-peer", scope["client"][0].encode()))
        request = httpx.Request(scope["method"], "http://admin/", headers=headers,
                                content=bytes(body),
                                extensions={"target": target, "timeout": _TIMEOUT})
        try:
            response = await self._transport.handle_async_request(request)
        except httpx.LocalProtocolError:
            await _reply(send, 400, b'{"error":"malformed request"}')
            return
        except httpx.HTTPError:
            await _reply(send, 503, b'{"error":"admin service unavailable, retry later"}')
            return
        out: list[Any] = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP]
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            await _stream(response, out, receive, send, self.stopping)
            return
        try:
            content = b"".join([part async for part in response.aiter_raw()])
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
    import httpx

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
