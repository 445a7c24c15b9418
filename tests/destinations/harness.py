"""A real log on tmp_path and an asyncio loop in a thread, so sync tests can run stages.

`LogHarness.append(...)` stores messages through a real `LogWriter` (durable on return);
`start(stage)`/`stop(stage)` run a stage's coroutines on the harness loop; tests then poll
with `eventually`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import threading
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from trackd.log import shard as shard_mod
from trackd.log.reader import LogReader
from trackd.log.records import Entry
from trackd.log.writer import LogWriter
from trackd.messages.enrich import iso
from trackd.observability import Registry
from trackd.types import Stage

T = TypeVar("T")
_ids = itertools.count(1)
_run = os.urandom(3).hex()


def message(user: str | None = None, n: int = 0, *, event: str = "Clicked",
            kind: str = "track", received: datetime | None = None,
            **fields: Any) -> dict[str, Any]:
    """An enriched message as the gateway stores it (unique messageId, receivedAt, ...)."""
    at = iso(received or datetime.now(UTC))
    out: dict[str, Any] = {"type": kind, "messageId": f"m-{_run}-{next(_ids)}",
                           "receivedAt": at, "timestamp": at, "originalTimestamp": at,
                           "sentAt": at, "properties": {"n": n}, "context": {}, "version": 2}
    if user is not None:
        out["userId"] = user
    if kind == "track":
        out["event"] = event
    out.update(fields)
    return out


def fail_once(monkeypatch: pytest.MonkeyPatch, owner: object, name: str,
              error: Exception) -> list[Exception]:
    """Make `owner.name` raise `error` on its first call, then work; returns what it raised."""
    real = getattr(owner, name)
    raised: list[Exception] = []

    def failing_once(*args: Any, **kwargs: Any) -> Any:
        if not raised:
            raised.append(error)
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing_once)
    return raised


class LogHarness:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.log_dir = root / "log"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = Registry()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.reader = LogReader(self.log_dir)
        self._writers: dict[str, LogWriter] = {}
        self._stages: list[Stage] = []
        self.writer("gw0")  # like a gateway worker: the shard exists before stages read

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def writer(self, shard: str = "gw0") -> LogWriter:
        if shard not in self._writers:
            writer = LogWriter(shard_mod.shard_path(self.log_dir, shard),
                               max_pending_bytes=64 << 20)
            writer.start(self.loop)
            self._writers[shard] = writer
        return self._writers[shard]

    def append(self, messages: list[dict[str, Any]], *, source: str = "web",
               shard: str = "gw0") -> list[str]:
        """Store messages durably; returns their messageIds."""
        entries = [Entry(source, m["messageId"], m["type"], m["receivedAt"],
                         json.dumps(m).encode()) for m in messages]
        self.run(self.writer(shard).append(entries))
        return [m["messageId"] for m in messages]

    def start(self, stage: Stage) -> Stage:
        self.run(stage.start())
        self._stages.append(stage)
        return stage

    def stop(self, stage: Stage, timeout: float = 60.0) -> None:
        self._stages.remove(stage)
        self.run(stage.stop(), timeout)

    def close(self) -> None:
        for stage in reversed(self._stages):
            self.run(stage.stop())
        self._stages.clear()
        for writer in self._writers.values():
            writer.close()
        self.reader.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
