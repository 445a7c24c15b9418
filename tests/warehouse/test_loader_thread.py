"""The loader's own thread after a round that fails (found by mutation testing of
warehouse/loader.py, docs/testing.md): it waits its backoff and goes on loading, however many
rounds went well before."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import eventually
from tests.warehouse.conftest import Log, enriched
from trackd.log.reader import LogReader
from trackd.observability import Registry
from trackd.settings import WarehouseSettings
from trackd.warehouse.db import Database
from trackd.warehouse.loader import WarehouseLoader


def test_a_failed_round_after_good_ones_is_retried_after_the_backoff(
        tmp_path: Path, log: Log, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    reader = LogReader(tmp_path / "log")
    database = Database(tmp_path / "warehouse.duckdb")
    loader = WarehouseLoader(WarehouseSettings(poll_interval=0.02), database, reader, Registry())
    read = reader.read
    failures: list[int] = []
    fail = False

    def read_failing_once(*args: Any, **kwargs: Any) -> Any:
        nonlocal fail
        if fail:
            fail = False
            failures.append(1)
            raise OSError("the log's disk hiccuped")
        return read(*args, **kwargs)

    monkeypatch.setattr(reader, "read", read_failing_once)

    def loaded(event: str) -> int:
        with database.reading() as cursor:
            found = cursor.execute("SELECT count(*) FROM information_schema.tables "
                                   "WHERE table_name = ?", [event]).fetchone()
            if not found or not found[0]:
                return 0
            rows = cursor.execute(f"SELECT count(*) FROM web.{event}").fetchall()
            return int(rows[0][0])

    async def scenario() -> None:
        nonlocal fail
        await loader.start()
        try:
            await asyncio.to_thread(log.write, [enriched("track", userId="u", event="first")])
            await asyncio.to_thread(eventually, lambda: loaded("first") == 1)
            fail = True  # the next round fails, once
            await asyncio.to_thread(log.write, [enriched("track", userId="u", event="second")])
            await asyncio.to_thread(eventually, lambda: loaded("second") == 1)
        finally:
            await loader.stop()

    try:
        with caplog.at_level(logging.ERROR, "trackd.warehouse"):
            asyncio.run(scenario())
    finally:
        reader.close()
    assert failures == [1]
    # the good rounds before reset the backoff: the first after them waits the first step
    assert [r.__dict__["in"] for r in caplog.records
            if r.getMessage() == "warehouse load failed; retrying"] == [0.5]
