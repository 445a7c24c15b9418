"""The PostgreSQL store's commit thread: a batch commits while the loader prepares the next.

`PgStore.load` flattens a batch in the loader's thread, then hands its PostgreSQL transaction
(COPYs, merges, users upsert, ledger, position, COMMIT) to `Commits.start`, which runs it on a
thread of its own and returns at once; the loader reads and flattens the next batch meanwhile,
and acknowledges a batch's records only once `settle` said that its COMMIT succeeded. So:

- one transaction at a time, in order: the store starts a batch's transaction only after the
  one before it committed (`wait`); when that one failed, the next is not started at all;
- `settle` reports the oldest batch not settled yet: it waits for its transaction and raises
  what it raised, and then forgets every batch after it (none of them was started);
- until settled, a batch's ledger rows stay here (`ledger`): the next batch's dedup (`find`)
  sees them before they are committed, on a connection other than the one committing.
"""

from __future__ import annotations

import concurrent.futures
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


@dataclass
class _Flight:
    """A batch handed to the commit thread and not settled: its transaction, its ledger rows."""

    transaction: concurrent.futures.Future[None]
    ledger: pa.Table


class Commits:
    """The batches committing, oldest first (see the module docstring)."""

    def __init__(self) -> None:
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._flights: deque[_Flight] = deque()

    def start(self, transaction: Callable[[], None], ledger: pa.Table) -> None:
        """Run `transaction` on the commit thread; `ledger`: the ledger rows it writes."""
        if self._thread is None:
            self._thread = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="warehouse-commit")
        self._flights.append(_Flight(self._thread.submit(transaction), ledger))

    def wait(self) -> bool:
        """Wait for the transaction running (if any) to end; whether every batch not settled
        committed. Their errors stay for `settle`."""
        return all(f.transaction.exception() is None for f in self._flights)

    def settle(self) -> None:
        """Wait for the oldest batch's COMMIT; raise what its transaction raised (and forget
        the batches after it, which were not started)."""
        if not self._flights:
            return
        flight = self._flights.popleft()
        try:
            flight.transaction.result()
        except BaseException:
            self.abandon()
            raise

    def abandon(self) -> None:
        """Forget every batch not settled, once none is running any more."""
        self.wait()
        self._flights.clear()

    def ledger(self, keys: pa.Array) -> list[tuple[Any, ...]]:
        """The ledger rows with these keys of the batches not settled, oldest first."""
        found: list[tuple[Any, ...]] = []
        for flight in self._flights:
            rows = flight.ledger.filter(pc.is_in(flight.ledger["key"], value_set=keys))
            found.extend(tuple(row.values()) for row in rows.to_pylist())
        return found

    def close(self) -> None:
        self.abandon()
        if self._thread is not None:
            self._thread.shutdown()
            self._thread = None
