"""A real HTTP receiver for destination tests: a ThreadingHTTPServer on 127.0.0.1.

It records every request and answers on demand: 200, 429 with Retry-After, 500, 400, or hangs
(never answers until the receiver stops). Replies come from, in order: a per-request `rule`
(a function of the request, returning a Reply or None), a script of queued replies, then
the default reply.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int = 200
    retry_after: str | None = None
    hang: bool = False
    body: bytes = b'{"success":true}'


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int | None = None  # None: the receiver hung

    def json(self) -> Any:
        return json.loads(self.body)

    def messages(self) -> list[dict[str, Any]]:
        """The messages carried: the body itself, or the items of {"batch": [...]}."""
        doc = self.json()
        if isinstance(doc, dict) and isinstance(doc.get("batch"), list):
            return list(doc["batch"])
        return [doc]

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Receiver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._script: deque[Reply] = deque()
        self.default = Reply()
        self.rule: Callable[[Received], Reply | None] | None = None
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:  # the sender went away mid-body (a kill -9): no
                    self.close_connection = True  # request arrived, as for a real server
                    return
                request = Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                   body, time.monotonic())
                reply = receiver._choose(request)
                request.status = None if reply.hang else reply.status
                with receiver._lock:
                    receiver._requests.append(request)
                if reply.hang:
                    receiver._release.wait(60)
                    self.close_connection = True
                    return
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply.body)))
                if reply.retry_after is not None:
                    self.send_header("Retry-After", reply.retry_after)
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    # -- behaviour -------------------------------------------------------------------------
    def reply(self, status: int = 200, *, retry_after: str | None = None,
              hang: bool = False) -> None:
        """The default answer from now on."""
        self.default = Reply(status, retry_after, hang)

    def script(self, *replies: Reply) -> None:
        """Answers for the next requests, in order, before the default applies again."""
        with self._lock:
            self._script.extend(replies)

    def _choose(self, request: Received) -> Reply:
        rule = self.rule
        if rule is not None:
            chosen = rule(request)
            if chosen is not None:
                return chosen
        with self._lock:
            if self._script:
                return self._script.popleft()
        return self.default

    # -- what arrived ----------------------------------------------------------------------
    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._requests)

    def accepted(self) -> list[dict[str, Any]]:
        """Messages of the requests answered 2xx, in arrival order."""
        return [m for r in self.requests if r.accepted for m in r.messages()]

    def accepted_ids(self) -> list[str]:
        return [m["messageId"] for m in self.accepted()]
