"""The admin API: Bearer admin token for /api/*, Basic (token as user) for the Profile API.

A write key never opens these routes.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from trackd.admin import openapi
from trackd.admin.lookup import where_is
from trackd.errors import QueryRefused
from trackd.gateway.app import basic_user

if TYPE_CHECKING:
    from trackd.app import Pipeline


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content, enc_hook=str)


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"success": False, "error": {"type": kind, "message": message},
                         "code": kind, "message": message}, status_code=status)


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

    PUBLIC = ("/openapi.json",)

    def __init__(self, app: Starlette, token: str, public: tuple[str, ...] = ()) -> None:
        self.app = app
        self.token = token
        self.public = (*self.PUBLIC, *public)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.public:
            request = Request(scope)
            ok = _bearer_ok(request, self.token) or (
                scope["path"].startswith("/v1/spaces/") and _basic_ok(request, self.token))
            if not ok:
                denied = _error(401, "authentication_error",
                                "Admin token required: Authorization: Bearer <admin_token>")
                await denied(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
        try:
            columns, rows = await asyncio.to_thread(engine.query, sql)
        except QueryRefused as exc:
            return _error(400, "query_error", str(exc))
        return JSONResponse({"columns": columns,
                             "rows": [dict(zip(columns, row, strict=True)) for row in rows]})

    async def event(request: Request) -> Response:
        message_id = request.path_params["message_id"]
        answer = await asyncio.to_thread(where_is, message_id, pipeline.reader,
                                         pipeline.lookups)
        return JSONResponse(answer, status_code=200 if answer["found"] else 404)

    async def quarantine(request: Request) -> Response:
        try:
            limit = min(1000, max(1, int(request.query_params.get("limit", "100"))))
        except ValueError:
            return _error(400, "invalid_request_error", "limit must be an integer")
        rows = await asyncio.to_thread(pipeline.reader.quarantined,
                                       source=request.query_params.get("source"), limit=limit)
        return JSONResponse({"quarantined": rows})

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi.document())

    routes = [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/api/v1/query", query, methods=["POST"]),
        Route("/api/v1/events/{message_id:path}", event, methods=["GET"]),
        Route("/api/v1/quarantine", quarantine, methods=["GET"]),
        *pipeline.extra_routes,
    ]
    return AdminGuard(Starlette(routes=routes), pipeline.settings.server.admin_token,
                      public=tuple(pipeline.public_paths))
