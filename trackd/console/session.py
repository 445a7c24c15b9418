"""Console sessions: a signed cookie given for the admin token, and CSRF tokens for actions.

The cookie is `<expires>.<nonce>.<signature>`: HMAC-SHA256 over the first two parts with a
key derived from the admin token, so changing the token ends every session. It is HttpOnly,
SameSite=Strict, Secure when the request came over https, and lasts `LIFETIME` seconds.
Logging out revokes the session's nonce for good: it is appended (with the session's expiry)
to a private file in the data dir, `console/revoked-sessions`, fsync'd before the answer, so a
restart, or any other process serving the same data dir, refuses the cookie too. Each check
looks at the file's size and time first and reads it again only when it changed; expired
entries are dropped when the file is loaded at start. An action's CSRF token is another HMAC
of the session's nonce.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import threading
import time
from pathlib import Path

from trackd.private import write_private

COOKIE = "trackd_session"
LIFETIME = 12 * 3600
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class Sessions:
    def __init__(self, admin_token: str, *, lifetime: int = LIFETIME,
                 revoked: Path | None = None) -> None:
        self._token = admin_token.encode()
        self._key = hmac.new(self._token, b"trackd console session", hashlib.sha256).digest()
        self.lifetime = lifetime
        self._revoked = Revoked(revoked)

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
        """End the session of `cookie` (durably when the sessions have a file)."""
        nonce = self.nonce(cookie)
        if nonce is not None and cookie is not None:
            self._revoked.add(nonce, int(cookie.split(".", 1)[0]))

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


class Revoked:
    """The nonces of sessions logged out: in memory, and in `path` (one `<expires> <nonce>`
    line each) when given."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._nonces: set[str] = set()
        self._seen: tuple[int, int] | None = None
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._prune(path)

    def __contains__(self, nonce: str) -> bool:
        self._refresh()
        return nonce in self._nonces

    def add(self, nonce: str, expires: int) -> None:
        with self._lock:
            self._nonces.add(nonce)
            if self.path is None:
                return
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW,
                         0o600)
            try:
                os.write(fd, f"{expires} {nonce}\n".encode())  # one write: appends never mix
                os.fsync(fd)
            finally:
                os.close(fd)

    def _refresh(self) -> None:
        """Read the file again when another process (or an earlier run) changed it."""
        if self.path is None:
            return
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return
        if (info.st_size, info.st_mtime_ns) == self._seen:
            return
        with self._lock:
            self._seen = (info.st_size, info.st_mtime_ns)
            self._nonces |= {nonce for _, nonce in _entries(self.path)}

    def _prune(self, path: Path) -> None:
        entries = _entries(path)
        now = time.time()
        kept = [(expires, nonce) for expires, nonce in entries if expires >= now]
        if len(kept) < len(entries):
            write_private(path, "".join(f"{e} {n}\n" for e, n in kept))
        self._nonces = {nonce for _, nonce in kept}


def _entries(path: Path) -> list[tuple[int, str]]:
    """The file's well-formed lines; a torn or unknown line is skipped."""
    out = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            expires, _, nonce = line.partition(" ")
            if expires.isdigit() and nonce:
                out.append((int(expires), nonce))
    return out
