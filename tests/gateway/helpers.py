"""Helpers shared by the HTTP tests: a server per module, posting, reading the log back."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import DEFAULT_CONFIG, Server
from trackd.log.reader import LogReader
from trackd.log.records import Entry, Refused, Violation

ADMIN_TOKEN = "test-admin-token"
_ids = itertools.count(1)
_run = os.urandom(3).hex()


class Captured:
    """A log writer for an `Ingestor` in process: it keeps what it is given, violations
    included."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.refused: list[Refused] = []
        self.violations: list[Violation] = []

    async def append(self, entries: list[Entry], refused: list[Refused],
                     violations: list[Violation] | None = None) -> None:
        self.entries += entries
        self.refused += refused
        self.violations += violations or []


def new_id(prefix: str = "m") -> str:
    """A messageId unique within the test run."""
    return f"{prefix}-{_run}-{next(_ids)}"


@contextmanager
def running_server(directory: Path, config: str = DEFAULT_CONFIG, *,
                   workers: int = 1) -> Iterator[Server]:
    """A `trackd serve` process for a whole test module; stopped (or killed) at the end."""
    server = Server(directory, config, workers=workers)
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            try:
                server.stop(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


def post(server: Server, path: str, body: Any, *, key: str | None = "wk_web",
         headers: dict[str, str] | None = None) -> httpx.Response:
    """POST JSON (or raw bytes) with the write key as HTTP Basic user (when `key`)."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    auth = (key, "") if key is not None else None
    return httpx.post(server.url + path, content=content, auth=auth, headers=headers or {},
                      timeout=30)


def stored(server: Server, message_id: str) -> list[dict[str, Any]]:
    """Every message with this messageId in the server's log, decoded."""
    reader = LogReader(server.data_dir / "log")
    try:
        return [json.loads(r.body) for r in reader.find(message_id)]
    finally:
        reader.close()


def stored_one(server: Server, message_id: str) -> dict[str, Any]:
    found = stored(server, message_id)
    assert len(found) == 1, f"{message_id}: {len(found)} stored messages"
    return found[0]


def quarantined(server: Server, message_id: str) -> list[dict[str, object]]:
    reader = LogReader(server.data_dir / "log")
    try:
        return reader.quarantined(message_id=message_id)
    finally:
        reader.close()


def error_of(response: httpx.Response) -> tuple[str, str]:
    """(error.type, error.message) of an error answer, checking the contract's one shape."""
    doc = response.json()
    assert doc["success"] is False
    assert doc["code"] == doc["error"]["type"]
    assert doc["message"] == doc["error"]["message"]
    return doc["error"]["type"], doc["error"]["message"]


# The log is what these tests look at: later stages are off and trimming never runs.
QUIET = """
[log]
trim_interval = 86400

[warehouse]
enabled = false

[archive]
enabled = false
"""

GATEWAY_CONFIG = DEFAULT_CONFIG + """
# One message per 50 s (a burst of one): what is over the limit is over it however slowly the
# test runs. Bursts and refill are tested on a clock the test moves (test_ratelimit.py).
[[sources]]
name = "limited"
write_keys = ["wk_limited"]
rate_limit_per_second = 0.02

[[sources]]
name = "bulk"
write_keys = ["wk_bulk"]
rate_limit_per_second = 0.02
""" + QUIET


def quarantined_with(server: Server, marker: str) -> list[dict[str, object]]:
    """Quarantined messages whose kept body contains `marker`."""
    reader = LogReader(server.data_dir / "log")
    try:
        return [q for q in reader.quarantined(limit=1_000_000) if marker in str(q["body"])]
    finally:
        reader.close()
