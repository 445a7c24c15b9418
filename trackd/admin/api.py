"""The admin API: Bearer admin token for /api/*, Basic (token as user) for the Profile API.

A write key never opens these routes.
"""

from __future__ import annotations

import asyncio
import hmac
import uuid
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from trackd.admin import openapi
from trackd.admin.lookup import where_is_live
from trackd.admin.throttle import AUTH_FAILED, AuthThrottle
from trackd.errors import QueryRefused
from trackd.gateway.app import basic_user

PEER_HEADER = "x-trackd-peer"
"""Set by the gateway worker's proxy to its client's address (dropped when a client sends it)."""

if TYPE_CHECKING:
    from trackd.app import Pipeline
    from trackd.console.access import ConsoleAccess


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content, enc_hook=str)


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"success": False, "error": {"type": kind, "message": message},
                         "code": kind, "message": message}, status_code=status)


def _profile_error(status: int, code: str, message: str) -> JSONResponse:
    """The Profile API's error shape (Segment's), with its Request-Id header, as its own
    routes answer (trackd.warehouse.profiles)."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers={"Request-Id": str(uuid.uuid4())})


def _bearer_ok(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), token.encode())


def _basic_ok(request: Request, token: str) -> bool:
    user = basic_user(request.headers.get("authorization", "").encode("latin-1"))
    return user is not None and hmac.compare_digest(user.encode(), token.encode())


class AdminGuard:
    """Every admin route needs the admin token, whoever added it; /openapi.json is public.

    `/api/*` takes `Authorization: Bearer <token>`; the Profile API (`/v1/spaces/*`) also takes
    HTTP Basic with the token as user name, as Segment's does. A write key never passes.
    """

    PUBLIC = ("/openapi.json", "/readyz")

    def __init__(self, app: Starlette, token: str, *, auth_failures: int = 10,
                 trusted_proxies: list[str] | None = None,
                 console: ConsoleAccess | None = None,
                 public: tuple[str, ...] = ()) -> None:
        self.app = app
        self.token = token
        self.throttle = AuthThrottle(auth_failures)
        self.trusted = set(trusted_proxies or ())
        self.console = console
        self.public = (*self.PUBLIC, *public)

    def client(self, request: Request) -> str:
        """The client's address: the peer, or over the unix socket the gateway worker's
        X-Trackd-Peer; X-Forwarded-For's first entry when that peer is a trusted proxy."""
        peer = request.client.host if request.client else request.headers.get(
            PEER_HEADER, "local")
        forwarded = request.headers.get("x-forwarded-for", "")
        if peer in self.trusted and forwarded.split(",")[0].strip():
            return forwarded.split(",")[0].strip()
        return peer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.public:
            request = Request(scope)
            client = self.client(request)
            wait = self.throttle.retry_after(client)
            if wait is not None:
                refused = _error(429, "rate_limit_error",
                                 "Too many failed admin authentications: retry later")
                refused.headers["retry-after"] = str(wait)
                await refused(scope, receive, send)
                return
            ok = _bearer_ok(request, self.token) or (
                scope["path"].startswith("/v1/spaces/") and _basic_ok(request, self.token))
            if not ok and self.console is not None and self.console.claims(scope):
                # The login form counts a wrong token on this same throttle (one per client,
                # whichever door it knocks on): see trackd.console.pages.
                scope.setdefault("state", {})[AUTH_FAILED] = lambda: self.throttle.failed(client)
                admitted = await self.console.admit(scope, receive, send)
                if admitted is None:
                    return
                receive, ok = admitted, True
            if not ok:
                if "authorization" in request.headers:  # a wrong credential, not none at all
                    self.throttle.failed(client)
                denied = (_profile_error(401, "authentication_error",
                                         "Basic auth with the admin token required")
                          if scope["path"].startswith("/v1/spaces/") else
                          _error(401, "authentication_error",
                                 "Admin token required: Authorization: Bearer <admin_token>"))
                await denied(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _AnyText(Convertor[str]):
    """A path parameter that is the rest of the path, whatever it holds: `/`, CR, LF, tab.

    (Starlette's `path` stops at a line break, and its `$` would then match before a final
    LF: `abc\n` was looked up as `abc`.)
    """

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anytext", _AnyText())


def build_admin(pipeline: Pipeline) -> AdminGuard:

    async def query(request: Request) -> Response:
        try:
            doc: Any = await request.json()
        except ValueError:
            return _error(400, "invalid_request_error", "Body must be JSON: {\"sql\": \"...\"}")
        sql = doc.get("sql") if isinstance(doc, dict) else None
        if not isinstance(sql, str) or not sql.strip():
            return _error(400, "invalid_request_error", "Missing required field: sql")
        engine = pipeline.query_engine
        if engine is None:
            return _error(503, "unavailable", "The warehouse is disabled")
        limit = doc.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                                  or limit < 0):
            return _error(400, "invalid_request_error", "limit must be a non-negative integer")
        try:  # on the engine's own threads: queries never hold the ones other routes use
            result = await engine.run(sql, limit=limit)
        except QueryRefused as exc:
            return _error(400, "query_error", str(exc))
        columns = result.columns
        return JSONResponse({"columns": columns, "truncated": result.truncated,
                             "rows": [dict(zip(columns, row, strict=True))
                                      for row in result.rows]})

    async def event(request: Request) -> Response:
        message_id = request.path_params["message_id"]
        answer = await where_is_live(message_id, pipeline.source, pipeline.lookups)
        return JSONResponse(answer, status_code=200 if answer["found"] else 404)

    async def quarantine(request: Request) -> Response:
        try:
            limit = min(1000, max(1, int(request.query_params.get("limit", "100"))))
        except ValueError:
            return _error(400, "invalid_request_error", "limit must be an integer")
        rows = await pipeline.source.quarantined(source=request.query_params.get("source"),
                                                 limit=limit)
        return JSONResponse({"quarantined": rows})

    async def readyz(request: Request) -> Response:
        ready, doc = await asyncio.to_thread(pipeline.health.readiness, pipeline.stages,
                                             pipeline.state)
        return JSONResponse(doc, status_code=200 if ready else 503)

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi.document())

    routes = [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/api/v1/query", query, methods=["POST"]),
        Route("/api/v1/events/{message_id:anytext}", event, methods=["GET"]),
        Route("/api/v1/quarantine", quarantine, methods=["GET"]),
        *pipeline.extra_routes,
    ]
    server = pipeline.settings.server
    console = pipeline.console.access if pipeline.console is not None else None
    return AdminGuard(Starlette(routes=routes), server.admin_token,
                      auth_failures=server.admin_auth_failures,
                      trusted_proxies=server.trusted_proxies, console=console,
                      public=tuple(pipeline.public_paths))
