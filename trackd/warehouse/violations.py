"""log -> warehouse for tracking plan violations: `<source>._violations`, exactly once.

The gateway writes a message's violations to the log's `violations` table in the commit that
stores the message (or its refusal). Each round of the warehouse loader then moves the new
ones into `<source>._violations`, one row per violation, in ONE DuckDB transaction with the
last log id loaded per shard (`_trackd.violation_offsets`): after a crash the next round
resumes exactly after what was committed, as for messages.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from trackd.log.records import Position
from trackd.observability import get_logger
from trackd.warehouse.db import registered
from trackd.warehouse.feed import ViolationRows
from trackd.warehouse.naming import quote

TABLE = "_violations"
MIRROR = "warehouse"
"""The log consumer name the loaded violations are recorded under (the warehouse loader's)."""
log = get_logger("warehouse")
_ARROW = "__trackd_violations"
COLUMNS = {"message_id": pa.string(), "received_at": pa.timestamp("us"), "type": pa.string(),
            "event": pa.string(), "violation": pa.string(), "path": pa.string(),
            "rule": pa.string(), "message": pa.string(), "plan_version": pa.int64(),
            "action": pa.string()}
_DDL = ("CREATE TABLE IF NOT EXISTS {schema}.{table} ("
        "message_id VARCHAR, received_at TIMESTAMP, type VARCHAR, event VARCHAR, "
        "violation VARCHAR, path VARCHAR, rule VARCHAR, message VARCHAR, plan_version BIGINT, "
        "action VARCHAR)")
_OFFSETS = ("CREATE TABLE IF NOT EXISTS _trackd.violation_offsets "
            "(shard VARCHAR PRIMARY KEY, last_id BIGINT NOT NULL)")


class ViolationLoader:
    """Loads the log's violations; `load_once` runs in the warehouse loader's thread.

    Each position it adopts (after the warehouse committed it) is mirrored to the log
    (`LogReader.commit_violations`), so the log trims only the violations loaded."""

    def __init__(self, reader: ViolationRows, batch_rows: int) -> None:
        self.reader = reader
        self.batch_rows = batch_rows
        self._position: Position | None = None
        reader.commit_violations(MIRROR, {})  # from now on the log keeps what is not loaded

    @property
    def position(self) -> Position | None:
        return self._position

    @position.setter
    def position(self, position: Position | None) -> None:
        self._position = position
        if position is not None:
            try:
                self.reader.commit_violations(MIRROR, position)
            except Exception:  # only trimming waits for it; the warehouse has the truth
                log.exception("could not mirror the warehouse's violation position to the log")

    def load_once(self, con: duckdb.DuckDBPyConnection) -> int:
        """Move the violations logged since the last round; returns how many."""
        if self.position is None:
            con.execute(_OFFSETS)
            self.position = {shard: int(last) for shard, last in con.execute(
                "SELECT shard, last_id FROM _trackd.violation_offsets").fetchall()}
        pending = self.read()
        if pending is None:
            return 0
        by_source, position, count = pending
        con.begin()
        try:
            for source, items in by_source.items():
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(source)}")
                con.execute(_DDL.format(schema=quote(source), table=quote(TABLE)))
                with registered(con, _ARROW, arrow(items)):
                    con.execute(f"INSERT INTO {quote(source)}.{quote(TABLE)} "
                                f"SELECT * FROM {_ARROW}")
            con.executemany("INSERT OR REPLACE INTO _trackd.violation_offsets VALUES (?, ?)",
                            list(position.items()))
            con.commit()
        except BaseException:
            con.rollback()
            raise
        self.position = position
        return count

    def read(self) -> tuple[dict[str, list[tuple[Any, ...]]], Position, int] | None:
        """The violations after `position` (set by the store first): rows per source, the
        position after them and how many; None when there are none. The store writes them
        and then sets `position`."""
        assert self.position is not None
        rows = self.reader.read_violations(self.position, self.batch_rows)
        if not rows:
            return None
        by_source: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        position = dict(self.position)
        for (shard, log_id, received_at, source, message_id, kind, event, violation, path,
             rule, message, version, action) in rows:
            by_source[source].append((message_id, _timestamp(received_at), kind, event,
                                      violation, path, rule, message, version, action))
            position[shard] = max(position.get(shard, 0), log_id)
        return by_source, position, len(rows)


def arrow(items: list[tuple[Any, ...]]) -> pa.Table:
    """One source's violation rows as an Arrow table of `_violations`' columns."""
    return pa.table({name: pa.array([row[i] for row in items], kind)
                     for i, (name, kind) in enumerate(COLUMNS.items())})


def _timestamp(text: str) -> datetime | None:
    """The log's receivedAt (ISO-8601, `Z`) as the warehouse's naive UTC timestamp."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
