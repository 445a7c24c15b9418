"""Console sessions: a signed cookie given for the admin token, and CSRF tokens for actions.

The cookie is `<expires>.<nonce>.<signature>`: HMAC-SHA256 over the first two parts with a
key derived from the admin token, so changing the token ends every session. It is HttpOnly,
SameSite=Strict, Secure when the request came over https, and lasts `LIFETIME` seconds.
Logging out forgets the nonce (in this process: a restart keeps sessions valid until they
expire). An action's CSRF token is another HMAC of the session's nonce.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

COOKIE = "trackd_session"
LIFETIME = 12 * 3600
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class Sessions:
    def __init__(self, admin_token: str, *, lifetime: int = LIFETIME) -> None:
        self._token = admin_token.encode()
        self._key = hmac.new(self._token, b"trackd console session", hashlib.sha256).digest()
        self.lifetime = lifetime
        self._revoked: set[str] = set()

    def token_ok(self, candidate: str) -> bool:
        """Whether `candidate` is the admin token (constant time; a write key never is)."""
        return bool(self._token) and hmac.compare_digest(candidate.strip().encode(), self._token)

    def issue(self, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.lifetime)
        body = f"{expires}.{secrets.token_urlsafe(16)}"
        return f"{body}.{self._sign(body)}"

    def nonce(self, cookie: str | None, now: float | None = None) -> str | None:
        """The session's nonce when `cookie` is a valid, unexpired, not revoked session."""
        if not cookie or cookie.count(".") != 2:
            return None
        expires, nonce, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._sign(f"{expires}.{nonce}")):
            return None
        if not expires.isdigit() or int(expires) < (time.time() if now is None else now):
            return None
        return None if nonce in self._revoked else nonce

    def revoke(self, cookie: str | None) -> None:
        nonce = self.nonce(cookie)
        if nonce is not None:
            self._revoked.add(nonce)

    def csrf(self, nonce: str) -> str:
        return self._sign(f"csrf.{nonce}")

    def csrf_ok(self, nonce: str, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate, self.csrf(nonce))

    def cookie_header(self, value: str, *, secure: bool) -> str:
        flags = f"Path=/; HttpOnly; SameSite=Strict; Max-Age={self.lifetime}"
        return f"{COOKIE}={value}; {flags}{'; Secure' if secure else ''}"

    @staticmethod
    def clear_header(*, secure: bool) -> str:
        return (f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
                f"{'; Secure' if secure else ''}")

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self._key, text.encode(), hashlib.sha256).digest())
