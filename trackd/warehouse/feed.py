"""Where the warehouse loader's records come from, seen from its thread (`trackd.log.protocol`).

- `PositionFeed` (the SQLite log): the loader keeps its position in the DuckDB transaction
  that loads the rows, reads after it, and mirrors it to the log after COMMIT (lag, trimming).
  Exactly once, whatever the moment of a crash, without depending on messageIds.
- `ConsumerFeed` (the NATS log): the shared durable consumer `warehouse`, read on the event
  loop that owns the NATS connection; records are held from their read (`LogConsumer.extend`:
  JetStream does not redeliver them while this process lives, however many rounds the
  loader's schedule keeps them waiting), acknowledged after COMMIT, and given back (nak with a
  delay) when their batch could not be loaded. A repeat (a process died between COMMIT and
  ack) is removed by the warehouse's ledger of messageIds, in the same transaction.
- `ViolationFeed` (the NATS log): tracking plan violations, as `LogReader.read_violations`
  gives them, from their own consumer; acknowledged after the loader's COMMIT (at least once:
  a process dying in between loads those violation rows again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from trackd.log.protocol import LogConsumer, LogSource
from trackd.log.reader import LogReader
from trackd.log.records import Position, Record
from trackd.observability import get_logger

if TYPE_CHECKING:
    from trackd.log.jetstream import JetStreamLog

CONSUMER = "warehouse"
RETRY_DELAY = 1.0
T = TypeVar("T")
log = get_logger("warehouse")


class ViolationRows(Protocol):
    def read_violations(self, after: Position, limit: int = 5000) -> list[tuple[Any, ...]]:
        """(shard, id, *VIOLATION_COLUMNS) of violations not loaded yet."""
        ...

    def commit_violations(self, consumer: str, position: Position) -> None:
        """Everything up to `position` is loaded: the log may trim it."""
        ...


def _run(coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop) -> T:
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


class Feed(Protocol):
    def open(self, position: Position) -> None: ...

    def read(self, limit: int, position: Position) -> list[Record]: ...

    def done(self, records: list[Record], position: Position) -> None:
        """`records` are committed in the warehouse, which is now at `position`."""
        ...

    def failed(self, records: list[Record]) -> None:
        """`records` were read and not loaded: they must come again."""
        ...

    def close(self) -> None: ...


class PositionFeed:
    """The SQLite log, read at the position the warehouse keeps (see the module docstring)."""

    def __init__(self, reader: LogReader) -> None:
        self.reader = reader

    def open(self, position: Position) -> None:
        self.reader.register(CONSUMER)
        self.reader.commit(CONSUMER, position)  # a crash may have left the log behind

    def read(self, limit: int, position: Position) -> list[Record]:
        return self.reader.read(CONSUMER, limit=limit, position=position)

    def done(self, records: list[Record], position: Position) -> None:
        try:
            self.reader.commit(CONSUMER, position)
        except Exception:  # only lag metrics and trimming wait for it; DuckDB has the truth
            log.exception("could not mirror the warehouse position to the log")

    def failed(self, records: list[Record]) -> None:
        """Nothing to do: the next read starts again at the position kept in DuckDB."""

    def close(self) -> None:
        """The reader belongs to the pipeline."""


async def _held(consumer: LogConsumer, limit: int) -> list[Record]:
    """Up to `limit` records, held until acknowledged or given back."""
    records = await consumer.read(limit)
    if records:
        await consumer.extend(records)
    return records


class ConsumerFeed:
    """A consumer of the NATS log, driven from the loader's thread (see the module docstring)."""

    def __init__(self, source: LogSource, loop: asyncio.AbstractEventLoop,
                 name: str = CONSUMER) -> None:
        self.source = source
        self.loop = loop
        self.name = name
        self.consumer: LogConsumer | None = None

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return _run(coro, self.loop)

    def _consumer(self) -> LogConsumer:
        if self.consumer is None:  # NATS was not there at start-up: try again now
            self.consumer = self._run(self.source.consumer(self.name))
        return self.consumer

    def open(self, position: Position) -> None:
        try:
            self._consumer()
        except Exception as exc:  # the loop retries; the pipeline still starts
            log.warning("the warehouse cannot reach the log yet", extra={"error": str(exc)})

    def read(self, limit: int, position: Position) -> list[Record]:
        return self._run(_held(self._consumer(), limit))

    def done(self, records: list[Record], position: Position) -> None:
        self._run(self._consumer().ack(records))

    def failed(self, records: list[Record]) -> None:
        try:
            self._run(self._consumer().retry(records, delay=RETRY_DELAY))
        except Exception:  # not given back: they come again after ack_wait
            log.exception("could not give records back to the log")

    def close(self) -> None:
        if self.consumer is not None and not self.loop.is_closed():
            try:
                self._run(self.consumer.close())
            except Exception:
                log.exception("could not close the warehouse's log consumer")


class ViolationFeed:
    """The NATS log's violations for `ViolationLoader` (see the module docstring)."""

    def __init__(self, log: JetStreamLog, loop: asyncio.AbstractEventLoop) -> None:
        self.log = log
        self.loop = loop
        self.consumer: LogConsumer | None = None
        self._read: list[Record] = []

    def read_violations(self, after: Position, limit: int = 5000) -> list[tuple[Any, ...]]:
        from trackd.log.jetstream import decode_violation

        if self.consumer is None:
            self.consumer = _run(self.log.violations(), self.loop)
        self._read = _run(self.consumer.read(limit), self.loop)
        rows = []
        for record in self._read:
            v = decode_violation(record.body)
            rows.append((record.shard, record.offset, v.received_at, v.source, v.message_id,
                         v.type, v.event, v.violation, v.path, v.rule, v.message,
                         v.plan_version, v.action))
        return rows

    def commit_violations(self, consumer: str, position: Position) -> None:
        """Nothing to record: on NATS the acknowledgements (`done`) let the stream trim."""

    def done(self) -> None:
        """What the last read gave is committed in the warehouse."""
        if self.consumer is not None and self._read:
            _run(self.consumer.ack(self._read), self.loop)
        self._read = []

    def close(self) -> None:
        if self.consumer is not None and not self.loop.is_closed():
            try:
                _run(self.consumer.close(), self.loop)
            except Exception:
                log.exception("could not close the violations' log consumer")
