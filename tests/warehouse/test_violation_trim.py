"""The log's tracking plan violations are trimmed once the warehouse loaded them, never before."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.warehouse.conftest import Log
from trackd.log import shard
from trackd.log.records import Entry, Violation
from trackd.log.writer import LogWriter

AT = "2024-05-01T10:00:00.000Z"


def append_flagged(log: Log, count: int) -> None:
    """`count` requests of one track each, every one with two flagged violations."""

    async def run() -> None:
        writer = LogWriter(shard.shard_path(log.directory, "gw0"), max_pending_bytes=1 << 30)
        writer.start(asyncio.get_running_loop())
        for i in range(count):
            body = (b'{"type":"track","messageId":"v%d","event":"Played","userId":"u",'
                    b'"receivedAt":"%s","timestamp":"%s"}' % (i, AT.encode(), AT.encode()))
            await writer.append([Entry("web", f"v{i}", "track", AT, body)], (), [
                Violation("web", f"v{i}", AT, "track", "Played", kind, path, "rule", "why", 1,
                          "flag")
                for kind, path in (("type_mismatch", "properties.n"),
                                   ("unplanned_property", "properties.x"))])
        await asyncio.to_thread(writer.close)

    asyncio.run(run())


def test_the_log_keeps_violations_until_the_warehouse_loaded_them(
        log: Log, make_warehouse: Callable[..., Any]) -> None:
    append_flagged(log, 3)
    w = make_warehouse(batch_rows=4)  # 4 violations a round: the 6 take two rounds
    reader = w.reader
    assert w.loader.load_once() == 7  # 4 violations, then all 3 messages
    assert reader.position("warehouse") == {"gw0": 3}
    assert reader.violations_loaded(["warehouse"]) == {"gw0": 4}
    reader.trim()  # every message is passed: only the 2 violations not loaded stay
    assert [(row[4], row[7]) for row in reader.read_violations({})] == [
        ("v2", "type_mismatch"), ("v2", "unplanned_property")]
    w.loader.load_available()
    reader.trim()
    assert reader.read_violations({}) == []
    assert w.rows("SELECT count(*) FROM web._violations") == [(6,)]
