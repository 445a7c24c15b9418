"""One POST of one batch to `{host}/v1/batch`, on the standard library's urllib.

The request is the one analytics-python 2.4.0 sends, with trackd's name: body
`{"batch": [...], "sentAt": ..., "writeKey": ...}`, `Authorization: Basic base64(key:)`,
`Content-Type: application/json`, `User-Agent: trackd-python/<version>`, `X-Retry-Count` on
retries and, with gzip, `Content-Encoding: gzip`. Redirects are not followed (a POST body
cannot be trusted to survive one); a 3xx is reported as an `APIError`.
"""

from __future__ import annotations

import base64

# Imported now, not lazily by the socket module on the first connection: a process forked
# while another thread was importing it gets 'unknown encoding: idna' (seen in the fork test).
import encodings.idna  # noqa: F401
import gzip
import http.client
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import trackd
from trackd.client._errors import (
    APIError,
    ConfigurationError,
    DeliveryError,
    NetworkError,
    RejectedError,
)
from trackd.client._message import format_timestamp
from trackd.client._policy import parse_retry_after

USER_AGENT = f"trackd-python/{trackd.__version__}"
_BODY_LIMIT = 1024 * 1024
_log = logging.getLogger("trackd.client")


def batch_url(host: str) -> str:
    """`{host}/v1/batch`: a trailing slash is dropped and a path prefix kept."""
    if not isinstance(host, str):
        raise ConfigurationError(f"host must be a string, got {type(host).__name__}")
    parts = urllib.parse.urlsplit(host.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"host must be an http:// or https:// URL, got {host!r}")
    if any(char.isspace() for char in host.strip()):
        raise ConfigurationError(f"host must be a URL without spaces, got {host!r}")
    return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/v1/batch"))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class Endpoint:
    """Where and how batches are posted. Holds no connection, so threads and forks may share it."""

    def __init__(
        self,
        host: str,
        write_key: str,
        *,
        gzip: bool = False,
        timeout: float = 15.0,
        proxies: Mapping[str, str] | None = None,
    ) -> None:
        self.url = batch_url(host)
        self.gzip = gzip
        self.timeout = timeout
        self._key = json.dumps(write_key).encode()
        token = base64.b64encode(f"{write_key}:".encode()).decode()
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Authorization": f"Basic {token}",
        }
        if gzip:
            self._headers["Content-Encoding"] = "gzip"
        # An explicit (possibly empty) proxy table: the environment's *_proxy is not consulted.
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler(dict(proxies or {})), _NoRedirects()
        )

    def body(self, items: Sequence[bytes], sent_at: str | None = None) -> bytes:
        """The uncompressed request body for already-encoded messages."""
        if sent_at is None:
            sent_at = format_timestamp(datetime.now(UTC))
        parts = (b'{"batch":[', b",".join(items), b'],"sentAt":"', sent_at.encode(), b'",')
        return b"".join((*parts, b'"writeKey":', self._key, b"}"))

    def envelope_bytes(self) -> int:
        """Bytes of a body around zero messages; each further message adds its length + 1."""
        return len(self.body([])) - 1

    def post(self, items: Sequence[bytes], retry_count: int = 0) -> Mapping[int, RejectedError]:
        """Send once. On any 2xx, returns the messages the server refused one by one (by batch
        position; usually none). Otherwise raises `APIError`, `NetworkError` (retryable) or, for
        anything unforeseen, a plain `DeliveryError` (not retried); never anything else."""
        data = self.body(items)
        headers = dict(self._headers)
        if retry_count > 0:
            headers["X-Retry-Count"] = str(retry_count)
        if self.gzip:
            data = gzip.compress(data)
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        _log.debug("posting %d messages, %d bytes, to %s", len(items), len(data), self.url)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                answer = response.read(_BODY_LIMIT)
                return _rejections(_json(answer), response.status, len(items))
        except urllib.error.HTTPError as error:
            with error:
                raise _api_error(error, len(items)) from None
        except (OSError, http.client.HTTPException) as error:
            reason = error.reason if isinstance(error, urllib.error.URLError) else error
            raise NetworkError(f"POST {self.url} failed: {reason}") from error
        except Exception as error:  # e.g. http.client.InvalidURL: report it, never raise it
            raise DeliveryError(f"POST {self.url} failed: {error!r}") from error


def _api_error(error: urllib.error.HTTPError, count: int) -> APIError:
    retry_after = parse_retry_after(error.headers.get("Retry-After"), time.time())
    status = error.code
    if 300 <= status < 400:
        where = error.headers.get("Location", "nowhere")
        note = f"redirected to {where}; check that host points at trackd itself"
        return APIError(status, "redirect", note, retry_after)
    try:
        body = error.read(_BODY_LIMIT)
    except (OSError, http.client.HTTPException):
        body = b""
    code, message = _parse_error_body(body)
    rejected = _rejections(_json(body), status, count)
    return APIError(status, code or "unknown", message or str(error.reason), retry_after, rejected)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        return None


def _parse_error_body(body: bytes) -> tuple[str | None, str | None]:
    """`code`/`message` from trackd's (and Segment's) error body, else the start of the text."""
    text = body.decode("utf-8", "replace").strip()
    payload = _json(body)
    if not isinstance(payload, dict):
        return None, text[:200] or None
    nested = payload.get("error")
    nested = nested if isinstance(nested, dict) else {}
    code = payload.get("code", nested.get("type"))
    message = payload.get("message", nested.get("message"))
    return (
        str(code) if code is not None else None,
        str(message) if message is not None else text[:200] or None,
    )


def _rejections(payload: Any, status: int, count: int) -> dict[int, RejectedError]:
    """trackd's `"rejected": [{"index": i, "error": {"type": ..., "message": ...}}]`, by index."""
    listed = payload.get("rejected") if isinstance(payload, dict) else None
    found: dict[int, RejectedError] = {}
    for entry in listed if isinstance(listed, list) else ():
        index = entry.get("index") if isinstance(entry, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
            continue
        error = entry.get("error")
        error = error if isinstance(error, dict) else {}
        code = str(error.get("type", "validation_error"))
        found[index] = RejectedError(status, code, str(error.get("message", "")), index)
    return found
