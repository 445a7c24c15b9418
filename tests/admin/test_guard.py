"""The admin guard covers every route, including those stages add (extra_routes)."""

from __future__ import annotations

import asyncio
import base64

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from trackd.admin.api import AdminGuard


async def _ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("secret")


def _status(path: str, headers: dict[str, str]) -> int:
    app = AdminGuard(Starlette(routes=[Route("/api/v1/added", _ok), Route("/v1/spaces/x", _ok),
                                       Route("/openapi.json", _ok)]), "tok")

    async def call() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            return (await client.get(path, headers=headers)).status_code

    return asyncio.run(call())


def basic(user: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:".encode()).decode()}


def test_every_route_needs_the_admin_token() -> None:
    assert _status("/api/v1/added", {}) == 401
    assert _status("/api/v1/added", {"Authorization": "Bearer wrong"}) == 401
    assert _status("/api/v1/added", basic("tok")) == 401  # Basic only for the Profile API
    assert _status("/api/v1/added", {"Authorization": "Bearer tok"}) == 200
    assert _status("/v1/spaces/x", basic("wk_web")) == 401
    assert _status("/v1/spaces/x", basic("tok")) == 200
    assert _status("/openapi.json", {}) == 200
