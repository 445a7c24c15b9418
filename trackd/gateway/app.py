"""The gateway's raw ASGI application: routing, CORS, errors; no framework on the hot path.

Tracking paths go to `Ingestor`; `/healthz`, `/readyz`, `/metrics` and the analytics.js
settings endpoint are answered here; admin paths (`/api/`, `/v1/spaces/`, `/openapi.json`, `/ui`)
are handed to `admin`, an ASGI app supplied by the composition root.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from trackd.errors import RequestRejected, Unavailable
from trackd.gateway.body import ClientGone, read_body
from trackd.gateway.ingest import Ingestor, Outcome
from trackd.messages import limits
from trackd.observability import Registry, get_logger

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SINGLE = {
    "/v1/track": "track", "/v1/identify": "identify", "/v1/page": "page",
    "/v1/screen": "screen", "/v1/group": "group", "/v1/alias": "alias",
    "/v1/t": "track", "/v1/i": "identify", "/v1/p": "page", "/v1/s": "screen",
    "/v1/g": "group", "/v1/a": "alias",
}
BATCH = ("/v1/batch", "/v1/import", "/v1/b")
TELEMETRY = "/v1/m"
ADMIN_PREFIXES = ("/api/", "/v1/spaces/", "/openapi.json", "/ui", "/docs", "/console")
_JSON = (b"content-type", b"application/json")
_ALLOW_HEADERS = b"authorization, content-type, x-retry-count"
_encode = msgspec.json.Encoder().encode
log = get_logger("gateway")


_BASIC_USERS: dict[bytes, str | None] = {}
_BASIC_USERS_MAX = 1024
_BASIC_HEADER_MAX = 256  # longer headers are decoded every time, so the memo stays small


def basic_user(header: bytes | None) -> str | None:
    """The user name of an HTTP Basic header, with or without the trailing colon.

    Memoised per header value: a source sends the same few headers on every request, and the
    base64 decode is ~0.7 us of a ~20 us request. Bounded: at most 1,024 headers of at most
    256 bytes, cleared whenever it is full.
    """
    if not header:
        return None
    if len(header) > _BASIC_HEADER_MAX:
        return _decode_basic(header)
    try:
        return _BASIC_USERS[header]
    except KeyError:
        pass
    user = _decode_basic(header)
    if len(_BASIC_USERS) >= _BASIC_USERS_MAX:
        _BASIC_USERS.clear()
    _BASIC_USERS[header] = user
    return user


def _decode_basic(header: bytes) -> str | None:
    if header[:6].lower() != b"basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return decoded.split(":", 1)[0] or None


_HOST = re.compile(rb"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   rb"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
                   rb"|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")


def api_host_of(host: bytes | None, server: tuple[str, int] | None) -> str:
    """analytics.js's apiHost for a request: its Host header when that is a well-formed host
    name or address (with an optional port), else the address the request came in on. Never
    anything else from the request, so the answer cannot carry a client's junk."""
    if host and len(host) <= 261 and _HOST.fullmatch(host):
        return host.decode("ascii") + "/v1"
    if server is None:
        return "127.0.0.1/v1"
    address, port = server[0], server[1]
    return f"[{address}]:{port}/v1" if ":" in address else f"{address}:{port}/v1"


def public_api_host(public_url: str) -> tuple[str, str]:
    """apiHost and protocol from `server.public_url` (checked when the settings load)."""
    parts = urllib.parse.urlsplit(public_url)
    return f"{parts.netloc}{parts.path.rstrip('/')}/v1", parts.scheme


def error_body(exc: RequestRejected) -> dict[str, Any]:
    return {"success": False, "error": {"type": exc.error_type, "message": exc.message},
            "code": exc.error_type, "message": exc.message}


class Gateway:
    """ASGI callable. `ready()` reports whether the log can take writes."""

    def __init__(self, ingestor: Ingestor, metrics: Registry, *,
                 ready: Callable[[], bool], render_metrics: Callable[[], str],
                 cors_origins: list[str], trusted_proxies: list[str],
                 admin: ASGIApp | None = None, public_url: str = "",
                 unhealthy: Callable[[], str | None] = lambda: None,
                 lifespan: tuple[Callable[[], Awaitable[None]],
                                 Callable[[], Awaitable[None]]] | None = None) -> None:
        self._ingestor = ingestor
        self._ready = ready
        self._render_metrics = render_metrics
        self._any_origin = "*" in cors_origins
        self._origins = {o.encode() for o in cors_origins}
        self._trusted = set(trusted_proxies)
        self._admin = admin
        self._public = public_api_host(public_url) if public_url else None
        self._unhealthy = unhealthy
        self._lifespan = lifespan
        self.draining = False
        self._requests = metrics.counter(
            "trackd_http_requests_total", "HTTP requests by path (a tracking path, admin, "
            "profile or other) and status.", ("path", "status"))
        self._latency = metrics.histogram("trackd_http_request_seconds",
                                          "Time to answer a tracking request.", labels=("path",))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._run_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if self._admin is not None and (path.startswith(ADMIN_PREFIXES) or path == "/" or (
                path == "/readyz" and scope["method"] == "GET" and self._health() is None)):
            # /readyz: the pipeline process answers with its stages once this worker is fine
            await self._admin(scope, receive, self._counted(
                send, "profile" if path.startswith("/v1/spaces/") else "admin"))
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        cors = self._cors(headers) if path.startswith("/v1/") else []
        label = path if path in SINGLE or path in BATCH or path == TELEMETRY else "other"
        try:
            status, body, extra = await self._route(scope, path, headers, receive)
        except RequestRejected as exc:
            status, body = exc.status, _encode(error_body(exc))
            extra = [(b"retry-after", str(exc.retry_after).encode())] if exc.retry_after else []
        except ClientGone:
            self._requests.inc((label, "499"))
            return
        except Exception:
            log.exception("unexpected error answering a request", extra={"path": path})
            status, body, extra = 500, _encode({"success": False, "error": {
                "type": "internal_error", "message": "Internal error"}}), []
        own_type = any(name == b"content-type" for name, _ in extra)  # /metrics: text
        await send({"type": "http.response.start", "status": status,
                    "headers": [*(() if own_type else (_JSON,)),
                                (b"content-length", str(len(body)).encode()), *cors, *extra]})
        await send({"type": "http.response.body", "body": body})
        self._requests.inc((label, str(status)))
        if label != "other":
            self._latency.observe(time.perf_counter() - started, (label,))

    def _counted(self, send: Send, label: str) -> Send:
        """`send` that counts the response in trackd_http_requests_total under `label`."""
        async def counting(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self._requests.inc((label, str(message["status"])))
            await send(message)

        return counting

    def _health(self) -> str | None:
        """Why this worker cannot take messages now (one line), or None."""
        if self.draining:
            return "shutting down"
        if not self._ready():
            return self._unhealthy() or "the log cannot be written"
        return self._unhealthy()

    async def _route(self, scope: Scope, path: str, headers: dict[bytes, bytes],
                     receive: Receive) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        method: str = scope["method"]
        is_tracking = path in SINGLE or path in BATCH or path == TELEMETRY
        if method == "OPTIONS" and (is_tracking or path.startswith("/v1/projects/")):
            return 204, b"", [(b"access-control-allow-methods", b"POST, GET, OPTIONS"),
                              (b"access-control-allow-headers", _ALLOW_HEADERS),
                              (b"access-control-max-age", b"86400")]
        if method == "GET":
            if path == "/healthz":
                reason = self._health()
                if reason is not None:
                    return 503, _encode({"status": "unavailable", "reason": reason}), []
                return 200, b'{"status":"ok"}', []
            if path == "/readyz":
                reason = self._health()
                if reason is not None:
                    return 503, _encode({"ready": False, "status": "unavailable",
                                         "reason": reason}), []
                return 200, _encode({"ready": True}), []
            if path == "/metrics":
                text = self._render_metrics().encode()
                return 200, text, [(b"content-type", b"text/plain; version=0.0.4")]
            if path.startswith("/v1/projects/") and path.endswith("/settings"):
                return self._settings(scope, path, headers)
        if not is_tracking:
            known = path in ("/healthz", "/readyz", "/metrics") or path.startswith(
                "/v1/projects/")
            if known:
                return 405, _encode({"success": False, "error": {
                    "type": "invalid_request_error", "message": "Method not allowed"}}), [
                    (b"allow", b"GET")]
            return 404, _encode({"success": False, "error": {
                "type": "invalid_request_error", "message": f"No such path: {path[:100]}"}}), []
        if method != "POST":
            return 405, _encode({"success": False, "error": {
                "type": "invalid_request_error", "message": "Method not allowed: use POST"}}), [
                (b"allow", b"POST, OPTIONS")]
        if self.draining:
            raise Unavailable("Server shutting down: retry later", retry_after=2)
        outcome = await self._track(scope, path, headers, receive)
        return outcome.status, _encode(outcome.body), []

    async def _track(self, scope: Scope, path: str, headers: dict[bytes, bytes],
                     receive: Receive) -> Outcome:
        encoding = headers.get(b"content-encoding", b"").decode("latin-1").strip().lower()
        length_header = headers.get(b"content-length")
        declared = int(length_header) if length_header and length_header.isdigit() else None
        if path == TELEMETRY:
            await read_body(receive, limit=64 * 1024, too_large="Telemetry payload too large",
                            encoding=encoding or None, declared_length=declared)
            return Outcome(200, {"success": True})
        kind = SINGLE.get(path)
        body = await read_body(
            receive,
            limit=limits.MAX_MESSAGE_BYTES if kind else limits.MAX_BATCH_BYTES,
            too_large=("Event payload exceeds 32KB limit" if kind
                       else "Batch payload exceeds 500KB limit"),
            encoding=encoding or None, declared_length=declared)
        key = basic_user(headers.get(b"authorization"))
        ip = self._client_ip(scope, headers)
        if kind is not None:
            return await self._ingestor.single(kind, body, key, ip)
        return await self._ingestor.batch(body, key, ip)

    def _client_ip(self, scope: Scope, headers: dict[bytes, bytes]) -> str | None:
        client = scope.get("client")
        peer = client[0] if client else None
        if peer in self._trusted:
            forwarded = headers.get(b"x-forwarded-for")
            if forwarded:
                return forwarded.decode("latin-1").split(",")[0].strip() or peer
        return peer

    def _cors(self, headers: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
        origin = headers.get(b"origin")
        if origin is None:
            return [(b"access-control-allow-origin", b"*")] if self._any_origin else []
        if self._any_origin or origin in self._origins:
            return [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
        return []

    def _settings(self, scope: Scope, path: str, headers: dict[bytes, bytes]
                  ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        key = path[len("/v1/projects/"):-len("/settings")]
        if self._ingestor.source_for(key) is None:
            return 404, _encode({"success": False, "error": {
                "type": "invalid_request_error", "message": "Unknown write key"}}), []
        api_host, protocol = self._public or (
            api_host_of(headers.get(b"host"), scope.get("server")), scope.get("scheme", "http"))
        doc = {"integrations": {"Segment.io": {"apiKey": key, "apiHost": api_host,
                                               "protocol": protocol}},
               "plan": {"track": {"__default": {"enabled": True}},
                        "identify": {"__default": {"enabled": True}}},
               "metrics": {"sampleRate": 0}, "edgeFunction": {}, "analyticsNextEnabled": True,
               "middlewareSettings": {}, "enabledMiddleware": {}, "remotePlugins": []}
        return 200, _encode(doc), []

    async def _run_lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self._lifespan is not None:
                        await self._lifespan[0]()
                except Exception as exc:
                    log.exception("gateway start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.draining = True
                if self._lifespan is not None:
                    await self._lifespan[1]()
                await send({"type": "lifespan.shutdown.complete"})
                return

