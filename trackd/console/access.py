"""Who may use the console: the admin guard asks `ConsoleAccess` about requests without the
admin token.

- Public: the login page, the static assets (no data in them), `/` (a redirect) and
  `/readyz`.
- With a valid session cookie: any console page and admin API route. A request that changes
  state (any method but GET and HEAD) must also carry the session's CSRF token, in the
  `X-CSRF-Token` header or a `csrf` form field; else 403.
- Otherwise: pages redirect to the login, API calls get 401.
"""

from __future__ import annotations

from http.cookies import SimpleCookie
from urllib.parse import parse_qs, quote

from starlette.types import Message, Receive, Scope, Send

from trackd.console.session import COOKIE, CSRF_FIELD, CSRF_HEADER, Sessions

PUBLIC = ("/console/login", "/console/static/", "/readyz")
MAX_FORM = 1024 * 1024


def cookie_of(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a malformed Cookie header is no session
                return None
            morsel = jar.get(COOKIE)
            if morsel is not None:
                return morsel.value
    return None


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _reply(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
                 ) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class ConsoleAccess:
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    @staticmethod
    def public(path: str) -> bool:
        return path == "/" or path.startswith(PUBLIC)

    def claims(self, scope: Scope) -> bool:
        """Whether the console answers this request without the admin token: its public
        paths, its pages and requests with a live session. Anything else is the admin guard's
        to refuse (and to count as a failed authentication)."""
        path: str = scope["path"]
        return (self.public(path) or path.startswith("/console")
                or self.sessions.nonce(cookie_of(scope)) is not None)

    async def admit(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """The `receive` to go on with when the request may pass; None when it was answered."""
        path: str = scope["path"]
        if self.public(path):
            return receive
        nonce = self.sessions.nonce(cookie_of(scope))
        if nonce is None:
            if path.startswith("/console"):
                target = "/console/login?next=" + quote(path, safe="/")
                await _reply(send, 303, b"", [(b"location", target.encode())])
            else:
                await _reply(send, 401, b'{"success":false,"error":{"type":'
                             b'"authentication_error","message":"Admin token or console '
                             b'session required"}}', [(b"content-type", b"application/json")])
            return None
        scope.setdefault("state", {})["csrf"] = self.sessions.csrf(nonce)
        if scope["method"] in ("GET", "HEAD"):
            return receive
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_FORM:
                await _reply(send, 413, b"request body too large", [])
                return None
        token = header(scope, CSRF_HEADER.encode())
        kind = header(scope, b"content-type") or ""
        if token is None and kind.startswith("application/x-www-form-urlencoded"):
            fields = parse_qs(body.decode("utf-8", "replace"))
            values = fields.get(CSRF_FIELD)
            token = values[0] if values else None
        if not self.sessions.csrf_ok(nonce, token):
            await _reply(send, 403, b'{"success":false,"error":{"type":"csrf_error",'
                         b'"message":"Missing or wrong CSRF token: reload the page and try '
                         b'again"}}', [(b"content-type", b"application/json")])
            return None
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        return replay
