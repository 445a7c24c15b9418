"""Read a request body with its limit applied while reading and while decompressing.

The limit is on the decoded bytes. A gzip bomb costs at most `limit` bytes of memory: the
decompressor is asked for no more than what is left under the limit, and reading stops there.
"""

from __future__ import annotations

import asyncio
import weakref
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from trackd.errors import InvalidRequest, RequestRejected, ValidationFailed

Receive = Callable[[], Awaitable[dict[str, Any]]]
BODY_TIMEOUT = 30.0  # seconds to receive a whole body (slow clients get 408)
_COMPRESSED_SLACK = 64 * 1024  # incompressible data grows a little when gzipped


class BodyTimeout(RequestRejected):
    status = 408
    error_type = "invalid_request_error"


class ClientGone(Exception):
    """The client disconnected before its body arrived."""


async def read_body(receive: Receive, *, limit: int, too_large: str,
                    encoding: str | None, declared_length: int | None) -> bytes:
    """The decoded body, or ValidationFailed(413) once more than `limit` bytes decode.

    A body not received within BODY_TIMEOUT seconds raises BodyTimeout (408).
    """
    if declared_length is not None and encoding is None and declared_length > limit:
        raise ValidationFailed(too_large, status=413)
    task = asyncio.current_task()
    if task is None:  # not in a task (never under uvicorn): no watchdog can cancel us
        return await _read(receive, limit, too_large, encoding)
    watchdog = _Watchdog.of_running_loop()
    cancelling = task.cancelling()
    watchdog.watch(task)
    try:
        return await _read(receive, limit, too_large, encoding)
    except asyncio.CancelledError:
        # As asyncio.timeout does: ours only when no other cancellation is pending.
        if watchdog.expired(task) and task.uncancel() <= cancelling:
            raise BodyTimeout("Request body not received in time") from None
        raise
    finally:
        watchdog.forget(task)


class _Watchdog:
    """Cancels the body reads of its event loop that have run longer than BODY_TIMEOUT.

    One per event loop rather than an `asyncio.timeout()` per request: that costs ~4 us a
    request (a timer handle scheduled and cancelled each time, ~18 % of the gateway's own
    CPU for single events), while this is two dict operations. A read is cancelled between
    BODY_TIMEOUT and BODY_TIMEOUT + BODY_TIMEOUT / 30 seconds after it started. The check
    re-arms itself only while reads are being watched, so an idle loop has no timer.
    """

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watchdog] = (
        weakref.WeakKeyDictionary())

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._started: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._armed = False

    @classmethod
    def of_running_loop(cls) -> _Watchdog:
        loop = asyncio.get_running_loop()
        watchdog = cls._by_loop.get(loop)
        if watchdog is None:
            watchdog = cls._by_loop[loop] = cls(loop)
        return watchdog

    def watch(self, task: asyncio.Task[Any]) -> None:
        self._started[task] = self._loop.time()
        if not self._armed:
            self._armed = True
            self._loop.call_later(BODY_TIMEOUT / 30, self._check)

    def forget(self, task: asyncio.Task[Any]) -> None:
        self._started.pop(task, None)
        self._expired.discard(task)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        return task in self._expired

    def _check(self) -> None:
        deadline = self._loop.time() - BODY_TIMEOUT
        late = [task for task, started in self._started.items() if started <= deadline]
        for task in late:
            del self._started[task]
            self._expired.add(task)
            task.cancel()
        self._armed = bool(self._started)
        if self._armed:
            self._loop.call_later(BODY_TIMEOUT / 30, self._check)


async def _read(receive: Receive, limit: int, too_large: str, encoding: str | None) -> bytes:
    decoder = _decoder(encoding)
    raw_limit = limit if decoder is None else limit + _COMPRESSED_SLACK
    chunks: list[bytes] = []
    raw_size = 0
    decoded_size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        raw_size += len(chunk)
        if raw_size > raw_limit:
            raise ValidationFailed(too_large, status=413)
        if decoder is None:
            chunks.append(chunk)
            continue
        try:
            out = decoder.decompress(chunk, limit + 1 - decoded_size)
        except zlib.error:
            raise InvalidRequest(f"Body is not valid {encoding}") from None
        decoded_size += len(out)
        chunks.append(out)
        if decoded_size > limit or decoder.unconsumed_tail:
            raise ValidationFailed(too_large, status=413)
    if decoder is not None:
        if not decoder.eof:
            raise InvalidRequest(f"Body is not valid {encoding}: truncated")
        if decoded_size > limit:
            raise ValidationFailed(too_large, status=413)
    return b"".join(chunks)


def _decoder(encoding: str | None) -> Any:
    if encoding is None or encoding == "identity":
        return None
    if encoding in ("gzip", "x-gzip"):
        return _Gzip()
    if encoding == "deflate":
        return _Deflate()
    raise InvalidRequest(f"Unsupported Content-Encoding: {encoding[:40]}")


class _Deflate:
    """HTTP deflate is zlib-wrapped, but some clients send raw deflate: accept both."""

    def __init__(self) -> None:
        self._inner: Any = None
        self._buffer = b""

    @property
    def eof(self) -> bool:
        return bool(self._inner is not None and self._inner.eof)

    @property
    def unconsumed_tail(self) -> bytes:
        return b"" if self._inner is None else bytes(self._inner.unconsumed_tail)

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._inner is None:
            self._buffer += data
            if len(self._buffer) < 2:
                return b""
            first = self._buffer[0]
            wrapped = first & 0x0F == 8 and (first << 8 | self._buffer[1]) % 31 == 0
            self._inner = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
            data, self._buffer = self._buffer, b""
        return bytes(self._inner.decompress(data, max_length))


class _Gzip:
    """gzip data may be several members one after another (RFC 1952): decode them all.

    Bytes after a member that do not start another one are an error, except zero padding.
    """

    def __init__(self) -> None:
        self._inner: Any = zlib.decompressobj(16 + zlib.MAX_WBITS)

    @property
    def eof(self) -> bool:
        return bool(self._inner.eof)

    @property
    def unconsumed_tail(self) -> bytes:
        return bytes(self._inner.unconsumed_tail)

    def decompress(self, data: bytes, max_length: int) -> bytes:
        out = bytes(self._inner.decompress(data, max_length))
        while self._inner.eof and self._inner.unused_data.strip(b"\0"):
            if len(out) >= max_length:  # over the limit already: the caller answers 413
                break
            rest = self._inner.unused_data
            self._inner = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out += self._inner.decompress(rest, max_length - len(out))
        return out
