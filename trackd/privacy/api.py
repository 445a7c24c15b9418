"""The regulations API (Segment's shape), on the admin API: record, then run in the background.

    POST /api/v1/regulations        {"regulationType", "subjectType", "subjectIds", "sources"?}
                                    -> 200 {"data": {"regulateId": "..."}}
    GET  /api/v1/regulations/{id}   -> {"data": {"regulation": {...}}}, 404 when unknown
    GET  /api/v1/regulations        -> {"data": {"regulations": [...]}}, newest first

A bad body gets 400 with the admin API's error shape, naming what is wrong.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from trackd.admin.api import JSONResponse
from trackd.admin.api import _error as error
from trackd.errors import LogError
from trackd.privacy.regulations import MAX_SUBJECTS, SUBJECT_TYPES, TYPES, stores_of
from trackd.privacy.service import PrivacyService

MAX_ID_CHARS = 1024


def _problem(doc: Any, sources: list[str]) -> str | None:
    """What is wrong with a regulation body, or None."""
    if not isinstance(doc, dict):
        return "Body must be a JSON object"
    kind = doc.get("regulationType")
    if kind not in TYPES:
        return f"regulationType must be one of {', '.join(TYPES)}"
    if doc.get("subjectType") not in SUBJECT_TYPES:
        return "subjectType must be USER_ID or ANONYMOUS_ID"
    ids = doc.get("subjectIds")
    if not isinstance(ids, list) or not ids:
        return "subjectIds must be a non-empty array of strings"
    if len(ids) > MAX_SUBJECTS:
        return f"subjectIds holds {len(ids)} ids: at most {MAX_SUBJECTS} a request"
    if not all(isinstance(i, str) and i and len(i) <= MAX_ID_CHARS for i in ids):
        return f"subjectIds must be non-empty strings of at most {MAX_ID_CHARS} characters"
    wanted = doc.get("sources")
    if wanted is not None:
        if not isinstance(wanted, list) or not all(isinstance(s, str) for s in wanted):
            return "sources must be an array of source names"
        unknown = sorted(set(wanted) - set(sources))
        if unknown:
            return f"Unknown source: {unknown[0]}"
    return None


def regulation_routes(service: PrivacyService, sources: list[str]) -> list[Route]:

    async def create(request: Request) -> Response:
        try:
            doc: Any = await request.json()
        except ValueError:
            return error(400, "invalid_request_error", "Body must be JSON")
        problem = _problem(doc, sources)
        if problem is not None:
            return error(400, "invalid_request_error", problem)
        keys = service.keys
        if keys is None:  # NATS: the shared keys not read yet
            return error(503, "unavailable", "The shared privacy state cannot be read yet: "
                         "retry later")
        kind, subject_type = doc["regulationType"], doc["subjectType"]
        ids = sorted(set(doc["subjectIds"]))
        key = "user_ids" if subject_type == "USER_ID" else "anonymous_ids"
        hashes = [keys.subject_hash("u" if key == "user_ids" else "a", i) for i in ids]
        wanted = doc.get("sources")
        try:
            regulation_id = await asyncio.to_thread(
                service.regulations.create, kind, subject_type, {key: ids}, hashes,
                None if wanted is None else sorted(set(wanted)),
                stores_of(kind, **service.stores, scoped=wanted is not None))
        except LogError as exc:  # NATS: the shared record not reachable now
            return error(503, "unavailable", str(exc))
        service.wake()
        return JSONResponse({"data": {"regulateId": regulation_id}})

    async def show(request: Request) -> Response:
        regulation_id = request.path_params["regulation_id"]
        try:
            found = await asyncio.to_thread(service.regulations.get, regulation_id)
        except LogError as exc:
            return error(503, "unavailable", str(exc))
        if found is None:
            return error(404, "not_found", f"No regulation with id {regulation_id!r}")
        return JSONResponse({"data": {"regulation": found}})

    async def recent(request: Request) -> Response:
        try:
            listed = await asyncio.to_thread(service.regulations.recent)
        except LogError as exc:
            return error(503, "unavailable", str(exc))
        return JSONResponse({"data": {"regulations": listed}})

    return [Route("/api/v1/regulations", create, methods=["POST"]),
            Route("/api/v1/regulations", recent, methods=["GET"]),
            Route("/api/v1/regulations/{regulation_id}", show, methods=["GET"])]
