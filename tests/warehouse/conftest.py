"""Warehouse fixtures: a real log written by LogWriter and a real DuckDB file in tmp_path."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.conftest import eventually
from trackd.log import shard
from trackd.log.reader import LogReader
from trackd.log.records import Entry
from trackd.log.writer import LogWriter
from trackd.observability import Registry
from trackd.settings import WarehouseSettings
from trackd.warehouse.db import Database
from trackd.warehouse.loader import WarehouseLoader

_ids = itertools.count(1)


async def run_loader_until(loader: WarehouseLoader, check: Callable[[], object]) -> None:
    """Start `loader`'s thread, wait until `check()` is true (`eventually`), then stop it,
    also when the wait failed."""
    await loader.start()
    try:
        await asyncio.to_thread(eventually, check)
    finally:
        await loader.stop()


def enriched(kind: str, *, source: str = "web", received_at: str = "2024-05-01T10:00:00.000Z",
             **fields: Any) -> dict[str, Any]:
    """A message as the gateway stores it (enriched), with a fresh messageId unless given."""
    message: dict[str, Any] = {
        "type": kind, "messageId": f"msg-{next(_ids)}", "receivedAt": received_at,
        "sentAt": received_at, "timestamp": received_at, "originalTimestamp": received_at,
        "context": {"ip": "10.0.0.1", "library": {"name": "test", "version": "1"}},
        "version": 2, "_source": source}
    message.update(fields)
    return message


class Log:
    """Appends enriched messages to shard files with the real LogWriter."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, messages: list[dict[str, Any]], shard_name: str = "gw0") -> None:
        entries = []
        for m in messages:
            body = {k: v for k, v in m.items() if k != "_source"}
            entries.append(Entry(m.get("_source", "web"), body["messageId"], body["type"],
                                 body["receivedAt"], msgspec.json.encode(body)))
        self.append(entries, shard_name)

    def append(self, entries: list[Entry], shard_name: str = "gw0") -> None:
        """Entries as given (bodies need not even be JSON)."""

        async def append() -> None:
            writer = LogWriter(shard.shard_path(self.directory, shard_name),
                               max_pending_bytes=1 << 30)
            writer.start(asyncio.get_running_loop())
            try:
                await writer.append(entries)
            finally:
                writer.close()

        asyncio.run(append())


@dataclasses.dataclass
class Warehouse:
    """A loader over tmp_path, driven in the test's thread (the one writer)."""

    loader: WarehouseLoader
    database: Database
    reader: LogReader
    metrics: Registry
    batch_failures_expected: bool = False

    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with self.database.reading() as cur:
            return cur.execute(sql, params or []).fetchall()

    def dicts(self, sql: str) -> list[dict[str, Any]]:
        with self.database.reading() as cur:
            result = cur.execute(sql)
            names = [d[0] for d in result.description or ()]
            return [dict(zip(names, r, strict=True)) for r in result.fetchall()]

    def columns(self, schema: str, table: str) -> dict[str, str]:
        return dict(self.rows(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [schema, table]))

    def metric(self, name: str) -> float:
        values = self.metrics.snapshot()[name]["values"]
        return float(sum(v for _, v in values))

    def expect_batch_failures(self) -> None:
        """This test makes batches fail on purpose: skip the check that none did."""
        self.batch_failures_expected = True

    def batch_failures(self) -> float:
        """Batches that failed and were retried or split: 0 when every batch loads at once.

        A load that only comes out right through the retry-and-split fallback is a bug the
        rows alone do not show; `make_warehouse` checks this is 0 after every test."""
        return self.metric("trackd_warehouse_batch_failures_total")


@pytest.fixture
def log(tmp_path: Path) -> Log:
    return Log(tmp_path / "log")


@pytest.fixture
def make_warehouse(tmp_path: Path) -> Iterator[Callable[..., Warehouse]]:
    """Factory: make_warehouse(**WarehouseSettings fields) -> an opened Warehouse.

    Calling it again closes the previous one first: a restart on the same files.
    After the test, every warehouse it made must have loaded with no failed batch (unless the
    test called `expect_batch_failures()`).
    """
    opened: list[Warehouse] = []
    failed: list[float] = []

    def close_all() -> None:
        while opened:
            w = opened.pop()
            if not w.batch_failures_expected:
                failed.append(w.batch_failures())
            w.database.close()
            w.reader.close()

    def factory(**settings: Any) -> Warehouse:
        close_all()
        reader = LogReader(tmp_path / "log")
        database = Database(tmp_path / "warehouse.duckdb")
        metrics = Registry()
        loader = WarehouseLoader(WarehouseSettings(**settings), database, reader, metrics,
                                 retry_delay=0.0)
        loader.open()
        warehouse = Warehouse(loader, database, reader, metrics)
        opened.append(warehouse)
        return warehouse

    yield factory
    close_all()
    assert not any(failed), (
        f"batches failed and were only loaded through the retry-and-split fallback: {failed}")
