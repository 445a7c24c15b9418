"""The Profile API in Segment's shape, served by the admin app (reached on the public port).

    GET /v1/spaces/{space}/collections/users/profiles/{id_type}:{id}/traits
        -> {"traits": {...}, "cursor": {"url", "has_more", "next", "limit"}}
    GET .../events        -> {"data": [{external_ids, context, type, message_id, source_id,
                                        timestamp, properties, event, related}], "cursor": ...}
    GET .../external_ids  -> {"data": [{id, type, source_id, collection, created_at, encoding,
                                        first_message_id}], "cursor": ...}
    GET /v1/spaces/{space}/collections/accounts/profiles/group_id:{id}/traits

`id_type` is user_id, anonymous_id or email; profiles are resolved by `identity` (an identify
with userId and anonymousId stitches the anonymous history to the user). Traits merge the
profile's identify calls in order (the last value of each trait wins). Events cover the last
14 days. Auth: HTTP Basic with the admin token as user name (Segment's way), or Bearer.
Errors are `{"error": {"code", "message"}}` with Segment's codes; every response carries a
`Request-Id` header. There is one space: any space id is accepted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from trackd.warehouse import identity
from trackd.warehouse.ledger import EVENT_RETENTION
from trackd.warehouse.lookup import iso
from trackd.warehouse.store import Readable, Reader
from trackd.warehouse.values import parse_timestamp

USERS = "/v1/spaces/{space}/collections/users/profiles/{ident:path}"
ACCOUNTS = "/v1/spaces/{space}/collections/accounts/profiles/{ident:path}"
MAX_CURSOR_DIGITS = 18  # a `next` cursor is an offset; longer is no cursor of ours


def _basic_user(header: str) -> str | None:
    """The user name of an HTTP Basic authorization header (password ignored)."""
    if header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.split(":", 1)[0] or None


class ProfileError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _reply(status: int, body: Any) -> Response:
    return Response(msgspec.json.encode(body), status_code=status,
                    media_type="application/json",
                    headers={"Request-Id": str(uuid.uuid4())})


def _limit(request: Request, default: int, most: int) -> int:
    raw = request.query_params.get("limit", str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ProfileError(400, "validation_error", "limit must be an integer") from None
    if not 1 <= value <= most:
        raise ProfileError(400, "validation_error", f"limit must be between 1 and {most}")
    return value


def _offset(request: Request) -> int:
    raw = request.query_params.get("next") or "0"
    if not (raw.isascii() and raw.isdigit() and len(raw) <= MAX_CURSOR_DIGITS):
        raise ProfileError(400, "validation_error", "next must be a cursor from a response")
    return int(raw)


def _names(request: Request, param: str) -> set[str] | None:
    raw = request.query_params.get(param)
    return {n.strip() for n in raw.split(",") if n.strip()} if raw else None


def _cursor(request: Request, has_more: bool, next_value: str, limit: int) -> dict[str, Any]:
    return {"url": request.url.path, "has_more": has_more,
            "next": next_value if has_more else "", "limit": limit}


def _identifier(request: Request, allowed: tuple[str, ...]) -> tuple[str, str]:
    ident = request.path_params["ident"]
    id_type, sep, value = ident.partition(":")
    if not sep or not value:
        raise ProfileError(400, "validation_error", "expected <id_type>:<id> in the path")
    if id_type not in allowed:
        raise ProfileError(400, "validation_error",
                           f"unsupported id_type {id_type!r}: use {', '.join(allowed)}")
    return id_type, value


class ProfileAPI:
    """Starlette routes for the Profile API over the warehouse `database`."""

    def __init__(self, database: Readable, admin_token: str,
                 clock: Callable[[], datetime]) -> None:
        self.database = database
        self.token = admin_token
        self.clock = clock

    def routes(self) -> list[Route]:
        return [
            Route(USERS + "/traits", self._handler(self.traits), methods=["GET"]),
            Route(USERS + "/events", self._handler(self.events), methods=["GET"]),
            Route(USERS + "/external_ids", self._handler(self.external_ids), methods=["GET"]),
            Route(ACCOUNTS + "/traits", self._handler(self.account_traits), methods=["GET"]),
        ]

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        user = _basic_user(header)
        if user is None and header.lower().startswith("bearer "):
            user = header[7:].strip()
        return user is not None and hmac.compare_digest(user.encode(), self.token.encode())

    def _handler(self, fn: Callable[[Reader, Request], dict[str, Any]]
                 ) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            if not self._authorized(request):
                return _reply(401, {"error": {"code": "authentication_error", "message":
                                              "Basic auth with the admin token required"}})
            if not self.database.is_open:
                return _reply(503, {"error": {"code": "unavailable",
                                              "message": "the warehouse is starting"}})
            try:
                return _reply(200, await asyncio.to_thread(self._run, fn, request))
            except ProfileError as exc:
                return _reply(exc.status, {"error": {"code": exc.code, "message": exc.message}})

        return endpoint

    def _run(self, fn: Callable[[Reader, Request], dict[str, Any]],
             request: Request) -> dict[str, Any]:
        with self.database.reading() as con:
            return fn(con, request)

    @staticmethod
    def _profile(con: Reader, request: Request) -> identity.Profile:
        id_type, value = _identifier(request, identity.ID_TYPES)
        profile = identity.resolve(con, id_type, value)
        if profile is None:
            raise ProfileError(404, "not_found", "Profile was not found.")
        return profile

    # -- resources ---------------------------------------------------------------------------
    def traits(self, con: Reader, request: Request) -> dict[str, Any]:
        limit = _limit(request, 10, 200)
        profile = self._profile(con, request)
        rows = con.execute(
            "SELECT body FROM _trackd.events WHERE type = 'identify' "
            "AND (user_id IN (SELECT unnest(?::VARCHAR[])) "
            "OR anonymous_id IN (SELECT unnest(?::VARCHAR[]))) "
            "ORDER BY received_at, shard, \"offset\"",
            [profile.values("user_id"), profile.values("anonymous_id")]).fetchall()
        merged: dict[str, Any] = {}
        for (body,) in rows:
            message = msgspec.json.decode(body)
            if identity.belongs(profile, *identity.identifiers(message)):
                traits = message.get("traits")
                if isinstance(traits, dict):
                    merged.update(traits)
        return self._page_traits(request, merged, limit)

    def account_traits(self, con: Reader, request: Request
                       ) -> dict[str, Any]:
        limit = _limit(request, 10, 200)
        _, group_id = _identifier(request, ("group_id",))
        # The text filter narrows the scan on either engine (unless the id may be written
        # with JSON escapes); the decoded groupId decides.
        plain = group_id.isascii() and group_id.isprintable() and not set(group_id) & set('"\\')
        pattern = "%" + (group_id.replace("%", "\\%").replace("_", "\\_") if plain else "") + "%"
        rows = con.execute(
            "SELECT body FROM _trackd.events WHERE type = 'group' "
            "AND CAST(body AS VARCHAR) LIKE ? ESCAPE '\\' "
            "ORDER BY received_at, shard, \"offset\"",
            [pattern]).fetchall()
        merged: dict[str, Any] = {}
        found = False
        for (body,) in rows:
            message = msgspec.json.decode(body)
            if message.get("groupId") != group_id:
                continue
            found = True
            traits = message.get("traits")
            if isinstance(traits, dict):
                merged.update(traits)
        if not found:
            raise ProfileError(404, "not_found", "Profile was not found.")
        return self._page_traits(request, merged, limit)

    @staticmethod
    def _page_traits(request: Request, merged: dict[str, Any], limit: int) -> dict[str, Any]:
        include = _names(request, "include")
        after = request.query_params.get("next") or ""
        names = sorted(n for n in merged if (include is None or n in include) and n > after)
        page = names[:limit]
        return {"traits": {n: merged[n] for n in page},
                "cursor": _cursor(request, len(names) > limit, page[-1] if page else "", limit)}

    def events(self, con: Reader, request: Request) -> dict[str, Any]:
        limit = _limit(request, 10, 100)
        offset = _offset(request)
        order = "ASC" if request.query_params.get("sort", "desc") == "asc" else "DESC"
        include, exclude = _names(request, "include"), _names(request, "exclude")
        start, end = (self._time(request, "start"), self._time(request, "end"))
        profile = self._profile(con, request)
        since = max(self.clock() - EVENT_RETENTION, start or datetime.min)
        rows = con.execute(
            "SELECT source, message_id, type, \"timestamp\", body FROM _trackd.events "
            "WHERE received_at >= ? AND (user_id IN (SELECT unnest(?::VARCHAR[])) "
            "OR anonymous_id IN (SELECT unnest(?::VARCHAR[])) OR key IN (SELECT key FROM "
            "_trackd.messages WHERE email IN (SELECT unnest(?::VARCHAR[])))) "
            f"ORDER BY \"timestamp\" {order}, received_at {order}, shard {order}, "
            f"\"offset\" {order}",
            [since, profile.values("user_id"), profile.values("anonymous_id"),
             profile.values("email")]).fetchall()
        data: list[dict[str, Any]] = []
        for source, message_id, kind, timestamp, body in rows:
            if (start and timestamp and timestamp < start) or (end and timestamp
                                                               and timestamp > end):
                continue
            message = msgspec.json.decode(body)
            ids = identity.identifiers(message)
            if not identity.belongs(profile, *ids):
                continue
            name = message.get("event") or message.get("name")
            if (include is not None and name not in include) or (
                    exclude is not None and name in exclude):
                continue
            data.append({
                "external_ids": [{"collection": "users", "encoding": "none", "id": v, "type": t}
                                 for t, v in zip(identity.ID_TYPES, ids, strict=True) if v],
                "context": message.get("context") or {},
                "type": kind, "message_id": message_id, "source_id": source,
                "timestamp": message.get("timestamp") or iso(timestamp),
                "properties": message.get("properties") or message.get("traits") or {},
                "event": name, "related": {"users": [profile.segment_id]}})
        page = data[offset:offset + limit]
        more = len(data) > offset + limit
        return {"data": page, "cursor": _cursor(request, more, str(offset + limit), limit)}

    @staticmethod
    def _time(request: Request, param: str) -> datetime | None:
        raw = request.query_params.get(param)
        if not raw:
            return None
        parsed = parse_timestamp(raw)
        if parsed is None:
            raise ProfileError(400, "validation_error", f"{param} must be an ISO-8601 time")
        return parsed

    def external_ids(self, con: Reader, request: Request
                     ) -> dict[str, Any]:
        limit = _limit(request, 25, 100)
        offset = _offset(request)
        include = _names(request, "include")
        profile = self._profile(con, request)
        firsts: dict[tuple[str, str], tuple[datetime, str, str]] = {}
        for id_type in identity.ID_TYPES:
            # The first message carrying each identifier (in Python: portable SQL only).
            for value, received, message_id, source in con.execute(
                    f"SELECT {id_type}, received_at, message_id, source FROM _trackd.messages "
                    f"WHERE type <> 'alias' AND {id_type} IN (SELECT unnest(?::VARCHAR[]))",
                    [profile.values(id_type)]).fetchall():
                known = firsts.get((id_type, value))
                if known is None or (received, message_id) < known[:2]:
                    firsts[(id_type, value)] = (received, message_id, source)
        rows = sorted(((t, v, *first) for (t, v), first in firsts.items()),
                      key=lambda row: (row[2], row[0], row[1]))
        data = [{"id": value, "type": id_type, "source_id": source, "collection": "users",
                 "created_at": iso(created), "encoding": "none", "first_message_id": first}
                for id_type, value, created, first, source in rows
                if include is None or id_type in include]
        page = data[offset:offset + limit]
        more = len(data) > offset + limit
        return {"data": page, "cursor": _cursor(request, more, str(offset + limit), limit)}


def profile_routes(database: Readable, admin_token: str,
                   clock: Callable[[], datetime]) -> list[Route]:
    """The Profile API routes, to append to the admin app's routes."""
    return ProfileAPI(database, admin_token, clock).routes()
