"""Work other parts run in the warehouse loader's thread, whose write connection is the
loader's alone (privacy deletions, the rewrite of DuckDB's file).

`submit` queues `job(store)` from any thread; the loader runs what waits between two batches
(`run`), and fails what is left when it stops (`fail`).
"""

from __future__ import annotations

import concurrent.futures
import queue
from collections.abc import Callable
from typing import TypeVar

from trackd.warehouse.store import Store

T = TypeVar("T")
Job = tuple[Callable[[Store], object], "concurrent.futures.Future[object]"]


class Jobs:
    """The loader's queue of jobs, each answered through its future."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()

    def empty(self) -> bool:
        return self._jobs.empty()

    def submit(self, job: Callable[[Store], T]) -> concurrent.futures.Future[T]:
        """Queue `job(store)`; its future gets what it returns or raises."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((job, future))  # type: ignore[arg-type]
        return future

    def run(self, store: Store) -> None:
        """Run every job waiting (in the loader's thread)."""
        while True:
            try:
                job, future = self._jobs.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job(store))
            except BaseException as exc:
                future.set_exception(exc)

    def fail(self, error: Callable[[], BaseException]) -> None:
        """Fail every job waiting with a new `error()` (the loader stopped)."""
        while True:
            try:
                _job, future = self._jobs.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                future.set_exception(error())
