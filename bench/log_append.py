"""Batched appends to the log, SQLite shard vs NATS JetStream, side by side in one run.

    .venv/bin/python bench/log_append.py [--seconds 6] [--rounds 3] [--concurrency 16]
                                         [--connections 1]

Each round runs both logs for the same time, one after the other, in one process (like one
gateway worker): `concurrency` tasks each append batches of 100 messages of ~600 bytes (what
one analytics-python request carries) and wait for durability (fsync; every PubAck). Prints
events/s, p50/p99 of one append, and NATS/SQLite per round. `--connections N` spreads the NATS
appends over N connections (N JetStreamLogs, as N gateway workers would). Needs the NATS server on
127.0.0.1:4222 (`--url`); the stream is made and deleted by the run. Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import nats

from trackd.log.jetstream import JetStreamLog
from trackd.log.protocol import LogProducer
from trackd.log.records import Entry
from trackd.log.sqlite import SqliteProducer
from trackd.log.writer import LogWriter
from trackd.settings import LogSettings

BODY = (b'{"type":"track","event":"Order Completed","userId":"user-%06d",'
        b'"properties":{"orderId":"o-123456","total":42.5,"currency":"EUR","coupon":null,'
        b'"products":[{"sku":"sku-1","price":19.99,"quantity":1}]},"context":{"library":'
        b'{"name":"analytics-python","version":"2.3.2"},"ip":"203.0.113.7","userAgent":'
        b'"Mozilla/5.0 (X11; Linux x86_64)"},"messageId":"%s","timestamp":'
        b'"2024-05-01T12:00:00.000Z","receivedAt":"2024-05-01T12:00:00.100Z",'
        b'"sentAt":"2024-05-01T12:00:00.050Z","originalTimestamp":"2024-05-01T12:00:00.000Z"}')


_RUN = uuid.uuid4().hex[:12]
_made = 0


def batch(n: int) -> list[Entry]:
    """`n` messages with ids unique in this run (a repeat would be dropped by NATS's dedup)."""
    global _made
    out = []
    for i in range(_made, _made + n):
        mid = f"{_RUN}-{i:09d}"
        out.append(Entry("web", mid, "track", "2024-05-01T12:00:00.100Z",
                         BODY % (i % 1000000, mid.encode())))
    _made += n
    return out


async def drive(producer: LogProducer | Spread, seconds: float,
                concurrency: int) -> tuple[int, list[float]]:
    latencies: list[float] = []
    count = 0
    stop = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal count
        while time.monotonic() < stop:
            entries = batch(100)
            started = time.perf_counter()
            await producer.append(entries)
            latencies.append(time.perf_counter() - started)
            count += len(entries)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count, latencies


def summary(name: str, count: int, latencies: list[float], seconds: float) -> float:
    rate = count / seconds
    q = statistics.quantiles(latencies, n=100)
    print(f"  {name:7} {rate:>9,.0f} events/s   p50 {q[49] * 1000:6.1f} ms   "
          f"p99 {q[98] * 1000:6.1f} ms")
    return rate


class Spread:
    """Appends round-robin over several NATS connections."""

    def __init__(self, logs: list[JetStreamLog]) -> None:
        self.logs = logs
        self.turn = 0

    async def append(self, entries: list[Entry]) -> None:
        self.turn += 1
        await self.logs[self.turn % len(self.logs)].append(entries)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    args = parser.parse_args()
    stream = f"bench-{uuid.uuid4().hex[:8]}"
    logs = [JetStreamLog(LogSettings(url=args.url, stream=stream))
            for _ in range(args.connections)]
    for log in logs:
        await log.start()
        assert log.healthy, log.last_error
    spread = Spread(logs)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sqlite = SqliteProducer(LogWriter(Path(tmp) / "gw0.db", max_pending_bytes=64 << 20))
            await sqlite.start()
            for round_ in range(1, args.rounds + 1):
                print(f"round {round_} (batches of 100, {args.concurrency} in flight)")
                rate_sqlite = summary("sqlite", *await drive(sqlite, args.seconds,
                                                             args.concurrency), args.seconds)
                rate_nats = summary("nats", *await drive(spread, args.seconds,
                                                         args.concurrency), args.seconds)
                print(f"  nats/sqlite {rate_nats / rate_sqlite:.2f}x")
            await sqlite.close()
    finally:
        for log in logs:
            await log.close()
        nc = await nats.connect(args.url)
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(stream)
        await nc.close()


if __name__ == "__main__":
    try:  # as in the gateway
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
