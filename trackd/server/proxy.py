"""Gateway workers hand admin requests to the pipeline process over its unix socket."""

from __future__ import annotations

from typing import Any

import httpx

from trackd.gateway.app import Receive, Scope, Send

MAX_ADMIN_BODY = 1024 * 1024
_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"host",
        b"x-trackd-peer"}


class AdminProxy:
    def __init__(self, socket_path: str) -> None:
        self._client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=socket_path),
                                         base_url="http://trackd-admin", timeout=120)

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
        if scope.get("client"):  # the admin API rate-limits failed logins per client
            headers.append((b"x-trackd-peer", scope["client"][0].encode()))
        query = scope.get("query_string", b"").decode("latin-1")
        url = scope["path"] + ("?" + query if query else "")
        try:
            response = await self._client.request(scope["method"], url, headers=headers,
                                                  content=bytes(body))
        except httpx.HTTPError:
            await _reply(send, 503, b'{"error":"admin service unavailable, retry later"}')
            return
        out: list[Any] = [(k.encode("latin-1"), v.encode("latin-1"))
                          for k, v in response.headers.items()
                          if k.encode("latin-1").lower() not in _HOP
                          and k.lower() != "content-encoding"]
        content = response.content
        out.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": out})
        await send({"type": "http.response.body", "body": content})


async def _reply(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
