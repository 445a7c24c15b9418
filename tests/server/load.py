"""Client threads that send singles and batches and remember what was acknowledged."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.conftest import Server
from trackd.log.reader import LogReader
from trackd.log.records import Record


@dataclass
class Load:
    """`threads` clients sending until `stop()`; every 200 is recorded with its messageIds."""

    server: Server
    threads: int = 6
    batch_size: int = 20
    fresh_connections: bool = False
    acked: list[str] = field(default_factory=list)
    acked_quarantined: list[str] = field(default_factory=list)
    sequences: dict[int, list[str]] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    retry_after: set[str | None] = field(default_factory=set)  # of the 503 answers
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for n in range(self.threads):
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(60)

    def wait_for(self, acked: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < acked:
            assert time.monotonic() < deadline, f"only {len(self.acked)} acked"
            time.sleep(0.01)

    def _run(self, n: int) -> None:
        url = self.server.url
        client = httpx.Client(base_url=url, auth=("wk_web", ""), timeout=10)
        sent_in_order: list[str] = []
        try:
            for i in itertools.count():
                if self._stop.is_set():
                    return
                prefix = f"t{n}-{i}"
                body: dict[str, Any]
                bad: list[str]
                if i % 2 == 0:
                    ids, bad = [prefix], []
                    path, body = "/v1/track", {"userId": f"user-{n}", "event": "Load",
                                               "messageId": prefix, "properties": {"i": i}}
                else:
                    ids = [f"{prefix}-{j}" for j in range(self.batch_size)]
                    bad = [f"{prefix}-bad"]
                    items: list[dict[str, Any]] = [
                        {"type": "track", "userId": f"user-{n}", "event": "Load",
                         "messageId": mid, "properties": {"i": i}} for mid in ids]
                    items.append({"type": "track", "userId": f"user-{n}", "messageId": bad[0]})
                    path, body = "/v1/batch", {"batch": items}
                try:
                    headers = {"Connection": "close"} if self.fresh_connections else {}
                    response = client.post(path, json=body, headers=headers)
                except httpx.HTTPError:
                    with self._lock:
                        self.errors += 1
                    if self._stop.is_set():
                        return
                    time.sleep(0.05)
                    continue
                with self._lock:
                    self.statuses[response.status_code] = self.statuses.get(
                        response.status_code, 0) + 1
                    if response.status_code == 503:
                        assert response.json()["error"]["type"] == "unavailable"
                        self.retry_after.add(response.headers.get("retry-after"))
                    if response.status_code == 200:
                        self.acked.extend(ids)
                        self.acked_quarantined.extend(bad)
                        sent_in_order.extend(ids)
                        self.sequences[n] = sent_in_order
        finally:
            client.close()


def read_all(server: Server) -> list[Record]:
    reader = LogReader(server.data_dir / "log")
    try:
        return reader.read("test-reader", limit=10_000_000)
    finally:
        reader.close()


def quarantined_ids(server: Server) -> set[str]:
    reader = LogReader(server.data_dir / "log")
    try:
        return {str(q["messageId"]) for q in reader.quarantined(limit=10_000_000)}
    finally:
        reader.close()
