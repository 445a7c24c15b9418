"""The batches the loader handed to the store and has not seen committed: overlap across batches.

A store may return from `load` before the batch's COMMIT (`Store.overlap`; the PostgreSQL store
runs the transaction on a thread of its own). The loader then reads and flattens the next batch
while the last one commits, and lands a batch (`Flights.land`, which waits in `Store.settle`)
before it acknowledges its records to the feed: NATS acks, or the position mirrored to the
SQLite log, which lets it trim. So nothing is acknowledged that is not committed, and a kill -9
with a COMMIT in flight leaves those records to be read again.

The position saved with a batch counts the batches in flight before it as committed: the store
starts a batch's transaction only after the one before committed, and not at all when that one
failed. A failed COMMIT therefore drops every batch in flight (`dropped`); the loader loads them
again, in order, the careful way (retries, halves, `_trackd.load_errors`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from trackd.log.records import Position, Record
from trackd.warehouse.batch import Batch
from trackd.warehouse.store import Store


@dataclass
class Flight:
    """A batch loaded and not seen committed: what the loader adopts once it is."""

    records: list[Record]
    batch: Batch
    position: Position  # the log position its transaction saves
    conflicts: int
    started: float  # perf_counter at its load


class Flights:
    """The loader's batches in flight, oldest first."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._queue: deque[Flight] = deque()
        self.dropped: list[list[Record]] = []  # the records of those the last failure dropped

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, flight: Flight) -> None:
        self._queue.append(flight)

    def records(self) -> list[Record]:
        return [r for flight in self._queue for r in flight.records]

    def others(self, records: list[Record]) -> list[Record]:
        """Those of `records` not in flight."""
        flying = {(r.shard, r.offset) for r in self.records()}
        return [r for r in records if (r.shard, r.offset) not in flying]

    def position(self, committed: Position) -> Position:
        """The position once every batch in flight committed (`committed`: none in flight)."""
        return self._queue[-1].position if self._queue else committed

    def land(self) -> Flight:
        """The oldest batch, once committed (`Store.settle`). When its transaction failed this
        raises what it raised, and every batch in flight is dropped (none was committed)."""
        try:
            self.store.settle()
        except BaseException:
            self.dropped = [flight.records for flight in self._queue]
            self._queue.clear()
            raise
        return self._queue.popleft()

    def abandon(self) -> None:
        """Forget the batches in flight without acknowledging them (stopping: the store's
        `close` waits for their transaction, and they are read again next time)."""
        self._queue.clear()
