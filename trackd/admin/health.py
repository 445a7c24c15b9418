"""The pipeline's health as data: stage states and lag, destinations, disk; for `/readyz`,
`trackd status` and the console's overview.

Lag is per log consumer: messages not yet committed, and seconds since the oldest of them was
received (0 when it is caught up). Each answer costs one indexed read per shard and consumer.
On the NATS log (no reader) lag is what the pipeline last asked JetStream (`remote_lag`, every
2 s): records not acknowledged, and the age of the oldest of them in the stream.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from trackd.log.reader import LogReader
from trackd.log.tail import LogTail
from trackd.plans.plans import read_status

SIZE_CACHE_SECONDS = 10.0


class _Staged(Protocol):
    name: str


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Health:
    def __init__(self, reader: LogReader | None, data_dir: Path) -> None:
        self.reader = reader
        self.data_dir = data_dir
        self.probe = LogTail(reader.log_dir) if reader is not None else None
        self.remote_lag: dict[str, tuple[int, float]] = {}  # NATS: (messages, seconds)
        self.started = time.time()
        self._size: tuple[float, int] = (0.0, 0)

    def consumers(self) -> list[str]:
        if self.reader is None:
            return sorted(self.remote_lag)
        return self.reader.consumers()

    def lag(self, consumer: str, now: datetime) -> dict[str, Any]:
        if self.reader is None or self.probe is None:
            messages, seconds = self.remote_lag.get(consumer, (0, 0.0))
            return {"messages": messages, "seconds": round(seconds, 1)}
        position = self.reader.position(consumer)
        messages = sum(max(0, head - position.get(name, 0))
                       for name, head in self.reader.heads().items())
        seconds = 0.0
        if messages:
            oldest = self.probe.oldest_after(position)
            if oldest is not None:
                seconds = max(0.0, (now - parse_iso(oldest)).total_seconds())
        return {"messages": messages, "seconds": round(seconds, 1)}

    def stages(self, stages: Iterable[_Staged], state: str) -> list[dict[str, Any]]:
        """Per stage (each is a log consumer of the same name): its state and lag."""
        now = datetime.now(UTC)
        return [{"name": stage.name, "state": state, "lag": self.lag(stage.name, now)}
                for stage in stages]

    def readiness(self, stages: Iterable[_Staged], state: str) -> tuple[bool, dict[str, Any]]:
        listed = self.stages(stages, state)
        ready = state == "running"
        doc: dict[str, Any] = {"ready": ready, "status": "ready" if ready else state,
                               "stages": listed}
        if not ready:
            doc["reason"] = f"the pipeline is {state}"
        plans = read_status(self.data_dir / "run" / "plans")
        if plans:  # public: the versions and whether a reload failed, not the error's text
            doc["plans"] = {name: {"versions": plan["versions"],
                                   "reloadFailed": plan["error"] is not None}
                            for name, plan in plans.items()}
        return ready, doc

    def disk(self) -> dict[str, int]:
        """Bytes under the data directory (recounted at most every 10 s) and free bytes."""
        at, size = self._size
        if time.monotonic() - at > SIZE_CACHE_SECONDS:
            size = directory_size(self.data_dir)
            self._size = (time.monotonic(), size)
        free = shutil.disk_usage(self.data_dir).free if self.data_dir.exists() else 0
        return {"dataBytes": size, "freeBytes": free}

    def uptime(self) -> float:
        return time.time() - self.started

    def close(self) -> None:
        if self.probe is not None:
            self.probe.stop()


def directory_size(root: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total
