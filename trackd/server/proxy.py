"""Gateway workers hand admin requests to the pipeline process over its unix socket.

The request target goes on byte for byte (`raw_path` and the query string as the client sent
them), so an id with `?`, `#`, `%` or a control character percent-encoded reaches the admin API
exactly; nothing is decoded and encoded again here. The request is made on httpx's transport
directly: no client, so no log line per request and no internal host name in the log.
"""

from __future__ import annotations

from typing import Any

import httpx

from trackd.gateway.app import Receive, Scope, Send

MAX_ADMIN_BODY = 1024 * 1024
_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"host",
        b"upgrade", b"te", b"trailer", b"proxy-connection", b"x-trackd-peer"}
_TIMEOUT = {"connect": 5.0, "read": 120.0, "write": 120.0, "pool": 120.0}


class AdminProxy:
    def __init__(self, socket_path: str) -> None:
        self._transport = httpx.AsyncHTTPTransport(uds=socket_path)

    async def aclose(self) -> None:
        await self._transport.aclose()

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
            try:
                content = b"".join([part async for part in response.aiter_raw()])
            finally:
                await response.aclose()
        except httpx.LocalProtocolError:
            await _reply(send, 400, b'{"error":"malformed request"}')
            return
        except httpx.HTTPError:
            await _reply(send, 503, b'{"error":"admin service unavailable, retry later"}')
            return
        out: list[Any] = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP]
        out.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": out})
        await send({"type": "http.response.body", "body": content})


async def _reply(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
