"""The bounded queue between the calling threads and the one consumer thread."""

from __future__ import annotations

import threading
import time
from collections import deque

from trackd.client._types import Item


class Buffer:
    """A FIFO of at most `capacity` waiting items that hands them out as size-limited batches.

    `put` never blocks. Items a batch has taken no longer count toward `capacity`, but they
    count as unfinished until `done`, so `wait_drained` returns only after every item put
    before it has been delivered or reported. All methods are thread-safe.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: deque[Item] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._unfinished = 0
        self._flushers = 0
        self._closed = False

    def put(self, item: Item) -> bool:
        """Append `item`; False, at once, when the buffer is full or closed."""
        with self._cond:
            if self._closed or len(self._items) >= self._capacity:
                return False
            self._items.append(item)
            self._unfinished += 1
            self._cond.notify_all()
            return True

    def take(self, max_items: int, max_bytes: int, max_wait: float) -> list[Item]:
        """Block until a batch is ready and return it; [] means closed and empty: stop.

        A batch is ready when it holds `max_items` items, when the next item would push the sum
        of `len(encoded) + 1` past `max_bytes` (the first item is always taken), when
        `max_wait` seconds have passed since the wait for its first item ended, or at once
        while someone waits in `wait_drained` or after `close`.
        """
        batch: list[Item] = []
        size = 0
        with self._cond:
            self._cond.wait_for(lambda: bool(self._items) or self._closed)
            deadline = time.monotonic() + max_wait
            while True:
                while self._items and len(batch) < max_items:
                    cost = len(self._items[0].encoded) + 1
                    if batch and size + cost > max_bytes:
                        return batch
                    batch.append(self._items.popleft())
                    size += cost
                if len(batch) >= max_items or self._closed or self._flushers:
                    return batch
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return batch
                self._cond.wait(remaining)

    def done(self, count: int) -> None:
        """Mark `count` taken items as delivered or reported."""
        with self._cond:
            self._unfinished -= count
            self._cond.notify_all()

    def wait_drained(self, timeout: float | None = None) -> bool:
        """Wait until no item is waiting or in flight; False if `timeout` ran out first.

        While anyone waits here, batches are sent as soon as they are taken, without waiting
        for `max_wait`.
        """
        with self._cond:
            self._flushers += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: self._unfinished == 0, timeout)
            finally:
                self._flushers -= 1

    def close(self) -> None:
        """Refuse further puts; `take` hands out what is left, then returns []."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def discard(self) -> list[Item]:
        """Close, and remove and return every item not yet taken (they count as finished)."""
        with self._cond:
            self._closed = True
            dropped = list(self._items)
            self._items.clear()
            self._unfinished -= len(dropped)
            self._cond.notify_all()
            return dropped
