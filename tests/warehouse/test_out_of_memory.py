"""The loader running out of DuckDB memory, on a real DuckDB with a small memory limit.

Two ways out, each proven on real batches: an admin query holding the memory is interrupted
and the batch loads at once (`make_room`); with nothing to interrupt, the batch is split until
its parts fit. Either way every message is in the warehouse once, none is written off, and
the metrics say which way it went.

Spill files are capped at 1 MB, so DuckDB cannot move the pressure to disk: 50 messages of
30 KB load alone in 64 MB but not beside a query holding a 34 MB hash table, and 200 of them
do not load in one transaction at all.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import eventually
from tests.warehouse.conftest import Log, enriched
from trackd.errors import QueryRefused
from trackd.log.reader import LogReader
from trackd.observability import Registry
from trackd.settings import WarehouseSettings
from trackd.types import QueryResult
from trackd.warehouse.db import Database
from trackd.warehouse.loader import WarehouseLoader
from trackd.warehouse.query import UNWIND_WAIT, WarehouseQueryEngine

MEMORY_MB = 64
# A hash join whose build side (150,000 rows of 128 characters, ~34 MB) stays in memory while
# its probe side (10^12 rows, none matching) runs until the query is interrupted.
HOLDS_MEMORY = ("SELECT max(a.s) FROM (SELECT i, repeat(md5(i::varchar), 4) s "
                "FROM range(150000) t(i)) a JOIN range(1000000000000) b(j) "
                "ON a.i = b.j + 1000000000")
INTERRUPTED = "query interrupted because the loader needed the memory"


def big_messages(count: int) -> list[dict[str, Any]]:
    return [enriched("track", event="Viewed", userId=f"u{i}",
                     properties={"blob": f"{i}-" + "x" * 30_000}) for i in range(count)]


class Setup:
    def __init__(self, root: Path) -> None:
        self.database = Database(root / "warehouse.duckdb", memory_limit_mb=MEMORY_MB,
                                 temp_mb=1, threads=1)
        self.reader = LogReader(root / "log")
        self.metrics = Registry()
        self.engine = WarehouseQueryEngine(self.database, timeout=600)

    def loader(self, *, make_room: bool) -> WarehouseLoader:
        loader = WarehouseLoader(
            WarehouseSettings(), self.database, self.reader, self.metrics, retry_delay=0.0,
            make_room=self.make_room if make_room else None)
        loader.open()
        return loader

    def make_room(self) -> int:  # as the server wires it
        return self.engine.interrupt_all("because the loader needed the memory",
                                         wait=UNWIND_WAIT)

    def metric(self, name: str) -> float:
        return float(sum(v for _, v in self.metrics.snapshot()[name]["values"]))

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with self.database.reading() as cursor:
            return cursor.execute(sql).fetchall()

    def memory_mb(self) -> float:
        return float(self.rows("SELECT sum(memory_usage_bytes) / 1e6 FROM duckdb_memory()")[0][0])


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    yield s
    s.engine.interrupt_all("because the test is over")
    s.engine.close()
    s.reader.close()


def assert_each_loaded_once(s: Setup, messages: list[dict[str, Any]]) -> None:
    ids = sorted(m["messageId"] for m in messages)
    assert sorted(r[0] for r in s.rows("SELECT id FROM web.tracks")) == ids
    assert sorted(r[0] for r in s.rows("SELECT id FROM web.viewed")) == ids
    assert s.rows("SELECT count(*) FROM _trackd.load_errors") == [(0,)]
    assert s.metric("trackd_warehouse_messages_loaded_total") == len(messages)
    assert s.metric("trackd_warehouse_load_errors_total") == 0


@contextlib.contextmanager
def memory_held(s: Setup) -> Iterator[concurrent.futures.Future[QueryResult]]:
    """An admin query holding ~34 MB of the 64 MB until it is interrupted."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        query = pool.submit(s.engine.query, HOLDS_MEMORY)
        try:
            eventually(lambda: s.memory_mb() > 30, timeout=60)
            yield query
        finally:
            s.engine.interrupt_all("because the test is over", wait=UNWIND_WAIT)


def test_a_query_holding_the_memory_is_interrupted_and_the_batch_loads_at_once(
        log: Log, setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    messages = big_messages(50)
    log.write(messages)
    loader = setup.loader(make_room=True)
    with memory_held(setup) as query, caplog.at_level(logging.WARNING, "trackd.warehouse"):
        assert loader.load_available() == 50
        with pytest.raises(QueryRefused, match=INTERRUPTED):
            query.result(timeout=60)
    assert_each_loaded_once(setup, messages)
    # Not a failed batch: the memory was made, and the batch went in whole.
    assert setup.metric("trackd_warehouse_batch_failures_total") == 0
    assert setup.metric("trackd_warehouse_queries_interrupted_total") == 1
    assert "admin queries were interrupted" in caplog.text


def test_the_same_query_without_make_room_costs_the_batch_a_split(
        log: Log, setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    # The control of the test above: the query does hold the memory the batch needs.
    messages = big_messages(50)
    log.write(messages)
    loader = setup.loader(make_room=False)
    with memory_held(setup) as query, caplog.at_level(logging.WARNING, "trackd.warehouse"):
        assert loader.load_available() == 50
        assert not query.done()
    assert_each_loaded_once(setup, messages)
    assert setup.metric("trackd_warehouse_batch_failures_total") >= 3
    failed = [r.__dict__["error"] for r in caplog.records
              if r.getMessage() == "warehouse batch failed"]
    assert failed and all("Out of Memory" in error for error in failed), failed
    assert setup.metric("trackd_warehouse_queries_interrupted_total") == 0  # none to call


def test_a_batch_too_big_for_the_memory_is_split_and_loaded_whole(
        log: Log, setup: Setup) -> None:
    messages = big_messages(200)
    log.write(messages)
    loader = setup.loader(make_room=True)  # nothing runs: nothing to interrupt
    assert loader.load_available() == 200
    assert_each_loaded_once(setup, messages)
    # The whole batch failed its 3 attempts and was split; the metrics say so, and that
    # nothing was written off (load errors 0, above) and no query was interrupted.
    assert setup.metric("trackd_warehouse_batch_failures_total") >= 3
    assert setup.metric("trackd_warehouse_queries_interrupted_total") == 0
    assert loader.position == setup.reader.position("warehouse")
