"""uvicorn's httptools protocol with bounds on what one client connection may hold.

uvicorn's protocol keeps a request's header growing for as long as the client sends it (20 MB of
headers got a 200; a worker kept 500 MB after such requests) and keeps a connection open for
as long as its client sends nothing, or one header every few seconds. `LimitedProtocol` adds,
per connection:

- a cap on the bytes of the request line and headers (`max_header_bytes`) and on the number of
  header lines (`max_headers`): 431 beyond, like nginx's 4 x 8 KB header buffers;
- a header timeout: the line and headers must arrive within `header_timeout` seconds of the
  request's first byte (408);
- an idle timeout: a connection with no request in progress (new, or kept alive between
  requests) is closed after `idle_timeout` seconds;
- a cap on open connections per worker (`max_connections`): a request on a connection beyond it
  gets trackd's 503 with Retry-After.

Every refusal is trackd's JSON error shape with `connection: close`; the connection then reads
and drops what the client still sends for up to LINGER seconds (so the client reads the answer
instead of a reset) and is closed. Timeouts are checked by `sweep()` a few times a second over
the open connections, not by a timer per request: a request costs one clock read.
"""

from __future__ import annotations

import asyncio
import http
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import msgspec
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from trackd.errors import InvalidRequest, RequestRejected, Unavailable
from trackd.gateway.app import error_body
from trackd.settings import ServerSettings

LINGER = 1.0
"""Seconds a refused connection keeps reading (and dropping) before it is closed."""
SWEEP_TICKS = 5
"""uvicorn ticks (0.1 s each) between two sweeps of the open connections."""
RETRY_AFTER_BUSY = 1

_IDLE, _HEAD, _REQUEST, _CLOSING = range(4)


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int
    max_headers: int
    header_timeout: float
    idle_timeout: float
    max_connections: int

    @classmethod
    def of(cls, server: ServerSettings) -> Limits:
        return cls(server.max_header_bytes, server.max_headers, server.header_timeout,
                   server.idle_timeout, server.max_connections)


class _Refused(Exception):
    """Raised in a parser callback to stop parsing once the request has been answered."""


class LimitedProtocol(HttpToolsProtocol):
    """One HTTP/1.1 connection; see the module docstring. Use `protocol_class(limits)`."""

    limits: ClassVar[Limits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = _IDLE
        self._deadline: float | None = None
        self._began = 0  # requests begun on this connection
        self._raw_head = 0  # bytes of the head being read, in the reads before this one
        self._read = 0  # bytes of this read
        self._over_cap = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline = self.loop.time() + self.limits.idle_timeout
        self._over_cap = len(self.connections) > self.limits.max_connections

    def data_received(self, data: bytes) -> None:
        if self._phase == _CLOSING:
            return  # refused: what still arrives is dropped until the linger ends
        phase, began = self._phase, self._began
        self._read = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no upgrades here: the request was handed to the app as a plain request
        except httptools.HttpParserError:
            if self._phase != _CLOSING:
                self._refuse(400, InvalidRequest("Invalid HTTP request"))
            return
        # A head that spans reads: all of this read belongs to it when the read started with
        # it (or with its first byte); the parser keeps an unfinished header to itself.
        if self._phase == _HEAD and phase != _REQUEST and self._began == began + (phase == _IDLE):
            self._raw_head += len(data)
            if self._raw_head > self.limits.max_header_bytes or (
                    len(self.headers) > self.limits.max_headers):
                self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = _HEAD
        self._deadline = self.loop.time() + self.limits.header_timeout
        self._began += 1
        self._raw_head = 0

    def on_headers_complete(self) -> None:
        limits = self.limits
        if len(self.headers) > limits.max_headers or (
                # The head came in reads of at most this many bytes: count it only if needed.
                self._raw_head + self._read > limits.max_header_bytes
                and len(self.url) + sum(len(name) + len(value) + 4
                                        for name, value in self.headers)
                > limits.max_header_bytes):
            self._refuse_head()
            raise _Refused
        if self._over_cap:
            self._refuse(503, Unavailable("Too many connections: retry later",
                                          retry_after=RETRY_AFTER_BUSY))
            raise _Refused
        self._phase = _REQUEST
        self._deadline = None
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # uvicorn's, except that the keep-alive wait is the sweep's idle deadline, not a timer.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self._phase == _REQUEST:
            self._phase = _IDLE
            self._deadline = self.loop.time() + self.limits.idle_timeout

    def expire(self, now: float) -> None:
        """Close the connection if its deadline has passed (called by `sweep`)."""
        if self._deadline is None or now < self._deadline or self.transport.is_closing():
            return
        if self._phase == _HEAD:
            self._refuse(408, InvalidRequest("Request headers not received in time"))
        else:
            self._deadline = None
            self.transport.close()

    def _refuse_head(self) -> None:
        limits = self.limits
        self._refuse(431, InvalidRequest(
            f"Request headers too large: at most {limits.max_header_bytes} bytes "
            f"in {limits.max_headers} headers"))

    def _refuse(self, status: int, error: RequestRejected) -> None:
        """Answer `status` with trackd's error shape, stop reading requests, close soon."""
        self._phase = _CLOSING
        self._deadline = self.loop.time() + LINGER
        if self.transport.is_closing():
            return
        body = msgspec.json.encode(error_body(error))
        retry = f"retry-after: {error.retry_after}\r\n" if error.retry_after else ""
        head = (f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
                f"{retry}connection: close\r\n\r\n")
        self.transport.write(head.encode("ascii") + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()


def protocol_class(limits: Limits) -> type[LimitedProtocol]:
    """A `LimitedProtocol` bound to `limits`, for uvicorn's `Config(http=...)`."""
    return type("LimitedProtocol", (LimitedProtocol,), {"limits": limits})


def sweep(connections: set[Any], now: float) -> None:
    """Close the connections whose header, idle or linger time has run out."""
    for connection in list(connections):
        if isinstance(connection, LimitedProtocol):
            connection.expire(now)


class SweepingServer(uvicorn.Server):
    """A uvicorn server whose `LimitedProtocol` connections are swept every half second."""

    async def on_tick(self, counter: int) -> bool:
        if counter % SWEEP_TICKS == 0:
            sweep(self.server_state.connections, asyncio.get_running_loop().time())
        return await super().on_tick(counter)
