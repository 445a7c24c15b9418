"""A real HTTP server on 127.0.0.1 that records requests and answers from a plan.

    with FaultServer([Reply(500), Reply(429, {"Retry-After": "1"})]) as server:
        ...  # the first request gets 500, the second 429, every later one 200

A `Reply(hang=True)` holds the request without answering until `release()` (or exit), so a
client's timeout fires. Leaving the `with` block releases hung requests, stops the server and
closes its socket.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = field(default_factory=lambda: {"success": True})
    hang: bool = False


@dataclass(frozen=True)
class Recorded:
    at: float  # time.monotonic() when the request had arrived
    path: str
    headers: dict[str, str]  # lower-case names
    raw: bytes
    status: int  # what the server answered; 0 when it hung up without answering

    @property
    def body(self) -> dict[str, Any]:
        data = self.raw
        if self.headers.get("content-encoding") == "gzip":
            data = gzip.decompress(data)
        payload = json.loads(data)
        assert isinstance(payload, dict)
        return payload

    @property
    def batch(self) -> list[dict[str, Any]]:
        batch = self.body["batch"]
        assert isinstance(batch, list)
        return batch

    @property
    def message_ids(self) -> list[str]:
        return [message["messageId"] for message in self.batch]


class FaultServer:
    def __init__(self, plan: Iterable[Reply] = (), default: Reply | None = None) -> None:
        self._plan = list(plan)
        self._default = default or Reply()
        self._lock = threading.Lock()
        self._requests: list[Recorded] = []
        self._released = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def release(self) -> None:
        """Let every hung request (and any later `hang` reply) end without an answer."""
        self._released.set()

    def delivered(self) -> list[dict[str, Any]]:
        """Every message of every request answered 2xx, in arrival order."""
        return [m for r in self.requests if 200 <= r.status < 300 for m in r.batch]

    def wait_for(self, condition: Callable[[FaultServer], bool], timeout: float = 10.0) -> None:
        """Poll `condition(self)` until true; AssertionError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not condition(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met in {timeout}s: {self.requests!r}")
            time.sleep(0.01)

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._plan.pop(0) if self._plan else self._default

    def _record(self, handler: BaseHTTPRequestHandler, raw: bytes, status: int) -> None:
        headers = {name.lower(): value for name, value in handler.headers.items()}
        entry = Recorded(time.monotonic(), handler.path, headers, raw, status)
        with self._lock:
            self._requests.append(entry)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                reply = server._next_reply()
                server._record(self, raw, 0 if reply.hang else reply.status)
                if reply.hang:
                    server._released.wait(30)
                    self.close_connection = True
                    return
                body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body)
                data = body if isinstance(body, bytes) else body.encode()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        return Handler
