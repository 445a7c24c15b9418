"""The seam to the outside world: a `Sender` posts messages to one destination.

`send(bodies)` makes exactly one HTTP request carrying every body (each an enriched message as
JSON bytes) and returns the 2xx status, or raises `RetryableDeliveryError` (408, 429, 5xx,
network error, timeout; with the Retry-After seconds when the answer had one) or
`PermanentDeliveryError` (other statuses). It never retries by itself: the worker and replay
own the retry policy. The HTTP transport is injectable (`httpx.MockTransport` in tests).

- `WebhookSender`: POST to `url`. With `batch_size` 1 the body is the message itself, otherwise
  `{"batch": [...]}`. Custom headers are added; with a `secret` the header
  `X-Trackd-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>` signs the request.
- `SegmentSender`: POST `{"batch": [...], "writeKey": ...}` to `<url>/v1/batch` with HTTP Basic
  auth of the write key, like Segment's SDKs. Each message's `sentAt` is removed so that the
  receiving API keeps its `timestamp` as is (a stale `sentAt` would make it re-correct the
  clock skew by the time the message spent queued here).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from typing import Protocol

import httpx
import msgspec

from trackd import __version__
from trackd.destinations.policy import Verdict, classify, parse_retry_after
from trackd.errors import PermanentDeliveryError, RetryableDeliveryError
from trackd.settings import DestinationSettings

SIGNATURE_HEADER = "X-Trackd-Signature"
USER_AGENT = f"trackd/{__version__}"
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class Sender(Protocol):
    """One destination's HTTP client."""

    name: str

    async def send(self, bodies: Sequence[bytes]) -> int:
        """Post `bodies` in one request; the 2xx status, or a DeliveryError."""
        ...

    async def aclose(self) -> None: ...


def signature(secret: str, body: bytes) -> str:
    """The value of X-Trackd-Signature for `body`: `sha256=<hex digest>`."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def batch_url(base: str) -> str:
    """`<base>/v1/batch`, accepting a base that already ends with /v1 or /v1/batch."""
    base = base.rstrip("/")
    if base.endswith("/v1/batch"):
        return base
    if base.endswith("/v1"):
        return base + "/batch"
    return base + "/v1/batch"


def join_batch(bodies: Sequence[bytes], extra: bytes = b"") -> bytes:
    """`{"batch":[<bodies>]<extra>}` without decoding the bodies again."""
    return b'{"batch":[' + b",".join(bodies) + b"]" + extra + b"}"


class _HTTPSender:
    def __init__(self, settings: DestinationSettings,
                 transport: httpx.AsyncBaseTransport | None) -> None:
        self.name = settings.name
        self.timeout = settings.timeout
        self._client = httpx.AsyncClient(transport=transport, timeout=settings.timeout,
                                         follow_redirects=False)
        self._headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                         **settings.headers}

    async def _post(self, url: str, content: bytes, headers: dict[str, str],
                    auth: tuple[str, str] | None = None) -> int:
        try:
            response = await self._client.post(url, content=content,
                                               headers={**self._headers, **headers},
                                               auth=auth if auth is not None else
                                               httpx.USE_CLIENT_DEFAULT)
        except httpx.TimeoutException:
            raise RetryableDeliveryError(f"timed out after {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise RetryableDeliveryError(
                f"network error: {type(exc).__name__}: {exc}".rstrip(": ")) from None
        status = response.status_code
        verdict = classify(status)
        if verdict is Verdict.OK:
            return status
        detail = f"HTTP {status}"
        text = response.text.strip()
        if text:
            detail += ": " + " ".join(text.split())[:200]
        if verdict is Verdict.RETRY:
            retry_after = parse_retry_after(response.headers.get("retry-after"), time.time())
            raise RetryableDeliveryError(detail, status=status, retry_after=retry_after)
        raise PermanentDeliveryError(detail, status=status)

    async def aclose(self) -> None:
        await self._client.aclose()


class WebhookSender(_HTTPSender):
    def __init__(self, settings: DestinationSettings,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(settings, transport)
        self.url = settings.url
        self.batched = settings.batch_size > 1
        self._secret = settings.secret

    async def send(self, bodies: Sequence[bytes]) -> int:
        if not self.batched and len(bodies) != 1:
            raise ValueError("an unbatched webhook sends one message per request")
        content = join_batch(bodies) if self.batched else bodies[0]
        headers = {SIGNATURE_HEADER: signature(self._secret, content)} if self._secret else {}
        return await self._post(self.url, content, headers)


def for_forwarding(body: bytes) -> bytes:
    """A stored message as sent on to another Segment-compatible API (without `sentAt`)."""
    message = _decode(body)
    if isinstance(message, dict) and "sentAt" in message:
        del message["sentAt"]
        return _encode(message)
    return body


class SegmentSender(_HTTPSender):
    def __init__(self, settings: DestinationSettings,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(settings, transport)
        self.url = batch_url(settings.url)
        self._write_key = settings.write_key
        self._key_field = b',"writeKey":' + _encode(settings.write_key)

    async def send(self, bodies: Sequence[bytes]) -> int:
        content = join_batch([for_forwarding(b) for b in bodies], self._key_field)
        return await self._post(self.url, content, {}, auth=(self._write_key, ""))


def build_sender(settings: DestinationSettings,
                 transport: httpx.AsyncBaseTransport | None = None) -> Sender:
    """The sender for `settings.type` (checked at start-up: webhook or segment)."""
    if settings.type == "segment":
        return SegmentSender(settings, transport)
    return WebhookSender(settings, transport)
