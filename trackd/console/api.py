"""The admin API endpoints the console's pages use (JSON; admin token or console session).

    GET  /api/v1/overview                        sources' totals, lag, destinations, disk
    GET  /api/v1/volume?by=minute|hour           accepted/refused per source and minute/hour
    GET  /api/v1/lag                             per consumer: messages and seconds behind
    GET  /api/v1/destinations                    per destination: health and counts
    GET  /api/v1/destinations/{name}/dead-letters
    POST /api/v1/destinations/{name}/replay      send its dead letters again
    GET  /api/v1/schema?source=                  call types and event names with counts
    GET  /api/v1/schema/properties?source=&type=&event=
    GET  /api/v1/live                            the live stream (text/event-stream)

Each reads running counts or an indexed row or two; none scans the warehouse.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from trackd import __version__
from trackd.admin.api import JSONResponse
from trackd.console.destinations import summary_json
from trackd.console.live import STATUSES, Filter, LiveHub

if TYPE_CHECKING:
    from trackd.console.service import Console


class LiveResponse(StreamingResponse):
    """The live stream of one subscriber, subscribed before the response's headers go out
    (a client that saw them misses nothing logged later) and unsubscribed however the
    response ends, even when its body never started."""

    def __init__(self, hub: LiveHub, where: Filter) -> None:
        self.hub = hub
        self.subscriber = hub.subscribe(where)
        super().__init__(hub.stream(self.subscriber), media_type="text/event-stream",
                         headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.hub.unsubscribe(self.subscriber)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"success": False, "error": {"type": "invalid_request_error",
                                                     "message": message}}, status_code=status)


def lag(console: Console) -> list[dict[str, Any]]:
    pipeline = console.pipeline
    now = datetime.now(UTC)
    return [{"consumer": name, "state": pipeline.state, **pipeline.health.lag(name, now)}
            for name in pipeline.health.consumers()]


def overview(console: Console) -> dict[str, Any]:
    pipeline = console.pipeline
    now = datetime.now(UTC)
    totals = console.counts.totals(now)
    empty = {"accepted": {"hour": 0, "day": 0}, "refused": {"hour": 0, "day": 0}}
    sources = [{"name": s.name, **totals.get(s.name, empty)} for s in pipeline.settings.sources]
    return {"version": __version__, "uptimeSeconds": round(pipeline.health.uptime(), 1),
            "state": pipeline.state, "sources": sources, "lag": lag(console),
            "destinations": console.destinations.summary(), "disk": pipeline.health.disk()}


def api_routes(console: Console) -> list[Route]:
    async def get_overview(request: Request) -> Response:
        return JSONResponse(await asyncio.to_thread(overview, console))

    async def volume(request: Request) -> Response:
        by = request.query_params.get("by", "minute")
        if by not in ("minute", "hour"):
            return error(400, "by must be minute or hour")
        return JSONResponse(console.counts.volume(by, datetime.now(UTC)))

    async def get_lag(request: Request) -> Response:
        return JSONResponse({"consumers": await asyncio.to_thread(lag, console)})

    async def destinations(request: Request) -> Response:
        return JSONResponse({"destinations": await asyncio.to_thread(
            console.destinations.summary)})

    async def dead_letters(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in console.destinations.workers:
            return error(404, f"no destination named {name[:100]!r}")
        rows = await asyncio.to_thread(console.destinations.dead_letters, name)
        return JSONResponse({"destination": name, "deadLetters": rows})

    async def replay(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in console.destinations.workers:
            return error(404, f"no destination named {name[:100]!r}")
        return JSONResponse(summary_json(await console.destinations.replay(name)))

    async def schema(request: Request) -> Response:
        source = request.query_params.get("source") or None
        return JSONResponse({"events": console.counts.catalogue(datetime.now(UTC), source)})

    async def violations(request: Request) -> Response:
        source = request.query_params.get("source") or None
        return JSONResponse({"groups": console.counts.violation_groups(datetime.now(UTC),
                                                                       source)})

    async def properties(request: Request) -> Response:
        params = request.query_params
        source, kind = params.get("source"), params.get("type")
        if not source or not kind:
            return error(400, "source and type are required (event too, for track)")
        found = console.counts.properties(source, kind, params.get("event") or None)
        if found is None:
            return error(404, "no such event seen in this source")
        return JSONResponse(found)

    async def live(request: Request) -> Response:
        status = request.query_params.get("status")
        if status and status not in STATUSES:
            return error(400, f"status must be one of {', '.join(STATUSES)}")
        return LiveResponse(console.live, Filter.of(request.query_params))

    return [
        Route("/api/v1/overview", get_overview, methods=["GET"]),
        Route("/api/v1/volume", volume, methods=["GET"]),
        Route("/api/v1/lag", get_lag, methods=["GET"]),
        Route("/api/v1/destinations", destinations, methods=["GET"]),
        Route("/api/v1/destinations/{name}/dead-letters", dead_letters, methods=["GET"]),
        Route("/api/v1/destinations/{name}/replay", replay, methods=["POST"]),
        Route("/api/v1/schema", schema, methods=["GET"]),
        Route("/api/v1/schema/properties", properties, methods=["GET"]),
        Route("/api/v1/violations", violations, methods=["GET"]),
        Route("/api/v1/live", live, methods=["GET"]),
    ]
