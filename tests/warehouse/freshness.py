"""Measure warehouse freshness: from the 200 of a tracking request to the row being queryable.

Not a test (pytest does not collect it): a measurement, run by hand, whose output goes into
docs/warehouse.md.

    .venv/bin/python -m tests.warehouse.freshness --rate 500 --seconds 20

It starts a real `trackd serve` (one gateway worker) on a temporary data dir, sends `rate`
track messages per second as /v1/batch requests ten times a second, notes the moment each
request got its 200, and polls the query API every 20 ms for rows that appeared since the last
poll. A message's freshness is (first poll that saw its row) - (its 200), on the client's
monotonic clock; the poll period bounds the error (<= 20 ms, always upwards).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import DEFAULT_CONFIG, Server

ADMIN = {"Authorization": "Bearer test-admin-token"}
PROPERTIES = {"plan": "pro", "revenue": 12.5, "items": 3, "coupon": "SPRING",
              "product": {"sku": "SKU-1", "name": "Thing", "price": 4.25}, "tags": ["a", "b"]}


def _send(url: str, rate: int, seconds: float, acked: dict[str, float],
          stop: threading.Event) -> None:
    per_tick = max(1, rate // 10)
    sequence = 0
    with httpx.Client(base_url=url, auth=("wk_web", ""), timeout=30) as client:
        started = time.monotonic()
        tick = 0
        while not stop.is_set() and time.monotonic() - started < seconds:
            ids = [f"fr-{sequence + i}" for i in range(per_tick)]
            sequence += per_tick
            batch = [{"type": "track", "userId": f"user-{i % 500}", "event": "Fresh Probe",
                      "messageId": message_id, "properties": PROPERTIES,
                      "context": {"page": {"url": "https://example.com/p"},
                                  "userAgent": "Mozilla/5.0"}}
                     for i, message_id in enumerate(ids)]
            response = client.post("/v1/batch", json={"batch": batch})
            now = time.monotonic()
            if response.status_code == 200:
                for message_id in ids:
                    acked[message_id] = now
            tick += 1
            time.sleep(max(0.0, started + tick * 0.1 - time.monotonic()))


def _poll(url: str, seen: dict[str, float], stop: threading.Event) -> None:
    last = "1970-01-01"
    with httpx.Client(base_url=url, headers=ADMIN, timeout=30) as client:
        while not stop.is_set():
            # One row whatever the count (the query API returns at most 10,000 rows).
            response = client.post("/api/v1/query", json={
                "sql": "SELECT list(id) AS ids, CAST(max(uuid_ts) AS VARCHAR) AS ts "
                       f"FROM web.fresh_probe WHERE uuid_ts >= TIMESTAMP '{last}'"})
            now = time.monotonic()
            if response.status_code == 200:
                row = response.json()["rows"][0]
                for message_id in row["ids"] or ():
                    seen.setdefault(message_id, now)
                last = row["ts"] or last
            time.sleep(0.02)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=500, help="messages per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "data", DEFAULT_CONFIG).start()
        acked: dict[str, float] = {}
        seen: dict[str, float] = {}
        stop = threading.Event()
        poller = threading.Thread(target=_poll, args=(server.url, seen, stop), daemon=True)
        poller.start()
        try:
            _send(server.url, args.rate, args.seconds, acked, stop)
            deadline = time.monotonic() + 30
            while len(seen) < len(acked) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            poller.join()
            with httpx.Client(base_url=server.url, timeout=30) as client:
                metrics = client.get("/metrics").text
            server.stop()
    latencies = [seen[m] - acked[m] for m in acked if m in seen]
    lines = [f"rate {args.rate}/s for {args.seconds:g} s: {len(acked)} acked, "
             f"{len(latencies)} seen"]
    if latencies:
        lines.append(f"200 -> queryable: p50 {statistics.median(latencies) * 1000:.0f} ms, "
                     f"p95 {_percentile(latencies, 0.95) * 1000:.0f} ms, "
                     f"p99 {_percentile(latencies, 0.99) * 1000:.0f} ms, "
                     f"max {max(latencies) * 1000:.0f} ms")
    lines += [line for line in metrics.splitlines()
              if line.startswith(("trackd_warehouse_freshness_seconds_count",
                                  "trackd_warehouse_freshness_seconds_sum",
                                  "trackd_warehouse_batch_seconds_sum",
                                  "trackd_warehouse_batch_seconds_count"))]
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
