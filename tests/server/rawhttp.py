"""Hand-driven client sockets, for what an HTTP client library will not send: floods of
headers, half request lines, one header every second."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def connect(port: int, timeout: float = 30.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset ends it too)."""
    out = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)


def read_answer(sock: socket.socket) -> Answer | None:
    """One whole answer on a kept-alive connection (its head, then Content-Length bytes of
    body: one recv may return less), or None when the server closed without one."""
    out = bytearray()
    while True:
        head, found, body = bytes(out).partition(b"\r\n\r\n")
        if found:
            answer = parse(bytes(out))
            if answer is not None and len(body) >= int(answer.headers.get("content-length", 0)):
                return answer
        chunk = sock.recv(65536)
        if not chunk:
            return parse(bytes(out))
        out += chunk


def parse(raw: bytes) -> Answer | None:
    """The first answer in `raw`, or None when the server sent nothing."""
    if not raw:
        return None
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    headers = {k.lower(): v for k, v in headers.items()}
    length = int(headers.get("content-length", len(body)))
    return Answer(int(lines[0].split()[1]), headers, body[:length])


def exchange(port: int, request: bytes) -> Answer | None:
    """Send `request` on a new connection, shut down the sending side, read the answer."""
    with connect(port) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        return parse(read_until_closed(sock))


def closed_within(sock: socket.socket, timeout: float) -> tuple[bool, bytes]:
    """Whether the server closed `sock` within `timeout` seconds, and what it sent first."""
    deadline = time.monotonic() + timeout
    out = bytearray()
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return True, bytes(out)
        if not chunk:
            return True, bytes(out)
        out += chunk
    return False, bytes(out)


def request(path: str = "/healthz", headers: dict[str, str] | None = None,
            host: str = "127.0.0.1") -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def floods(port: int, connections: int, megabytes: int) -> list[str]:
    """`flood` on `connections` connections at once; how each ended."""
    with concurrent.futures.ThreadPoolExecutor(connections) as pool:
        return list(pool.map(lambda _: flood(port, megabytes), range(connections)))


def flood(port: int, megabytes: int) -> str:
    """Send one header of `megabytes` MB; how the server ended it ("431" or "reset")."""
    with connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: ")
        chunk = b"c" * 65536
        try:
            for _ in range(megabytes * 16):
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            first = sock.recv(65536)
        except ConnectionResetError:
            return "reset"
        answer = parse(first)
        return str(answer.status) if answer else "closed"
