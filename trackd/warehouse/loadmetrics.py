"""The warehouse loader's metrics: messages loaded and skipped, failures, and freshness."""

from __future__ import annotations

import time
from datetime import datetime

from trackd.observability import Registry
from trackd.warehouse.flights import Flight

_FRESHNESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)


class LoaderMetrics:
    """The loader's counters and histograms, registered in `metrics`."""

    def __init__(self, metrics: Registry) -> None:
        self.loaded = metrics.counter("trackd_warehouse_messages_loaded_total",
                                      "Messages loaded into the warehouse.", ("source",))
        self.duplicates = metrics.counter("trackd_warehouse_duplicates_total",
                                          "Messages not loaded: a repeat of a loaded messageId.",
                                          ("source",))
        self.conflicts = metrics.counter("trackd_warehouse_type_conflicts_total",
                                         "Rows with a value kept in _type_conflicts.")
        self.overflows = metrics.counter(
            "trackd_warehouse_overflow_total",
            "Rows with values kept in _overflow: beyond a table's column limit (limit=columns) "
            "or an event beyond the source's table limit (limit=tables).", ("source", "limit"))
        self.errors = metrics.counter("trackd_warehouse_load_errors_total",
                                      "Messages that could not be loaded (see load_errors).")
        self.failures = metrics.counter("trackd_warehouse_batch_failures_total",
                                        "Load transactions that failed and were retried.")
        self.interrupted = metrics.counter(
            "trackd_warehouse_queries_interrupted_total",
            "Admin queries interrupted to give their memory to a load that ran out of it.")
        self.seconds = metrics.histogram("trackd_warehouse_batch_seconds",
                                         "Time of one load transaction.")
        self.freshness = metrics.histogram(
            "trackd_warehouse_freshness_seconds",
            "From receivedAt to the row being queryable (commit).", _FRESHNESS_BUCKETS)

    def committed(self, flight: Flight, now: datetime) -> None:
        """`flight` was seen committed at `now`."""
        batch = flight.batch
        for source, count in batch.loaded.items():
            self.loaded.inc((source,), count)
        for source, count in batch.duplicates.items():
            self.duplicates.inc((source,), count)
        self.conflicts.inc((), flight.conflicts)
        for (source, limit), count in batch.overflows.items():
            self.overflows.inc((source, limit), count)
        for received, count in batch.received.items():
            self.freshness.observe(max(0.0, (now - received).total_seconds()), count=count)
        self.seconds.observe(time.perf_counter() - flight.started)
