"""log -> warehouse: the `warehouse` consumer loads micro-batches into DuckDB, exactly once.

Rows are written through the warehouse seam (`store.Store`): below, "DuckDB" is the default
store; the PostgreSQL store (`postgres.store`) keeps the same steps and the same one
transaction per batch, position included.

One thread (the loader's) opens the file, does every write, and closes it. Each round it reads
up to `batch_rows` records after the position stored in DuckDB, and in ONE DuckDB transaction:

1. drops messages already loaded for their source (the ledger, `batch.is_duplicate`),
2. creates the schemas, tables and columns the rows need (`catalog`),
3. inserts each table's rows in bulk from Arrow, and upserts users/accounts (`upsert`),
4. writes the ledger, duplicates, profile events and the new log position (`ledger`),

then COMMITs, and only then mirrors the position to the log (`LogReader.commit`, which drives
lag metrics and trimming). A store may return from `load` before the COMMIT (PostgreSQL: see
`flights`): while a full batch commits, the loader reads and flattens the next, and mirrors or
acknowledges the first only after `Store.settle` said it committed.

When a read needs much schema work (new tables and columns), the `schedule` splits it: the
other sources' records first, then bounded chunks of the heavy source's, in transactions of
their own; the position saved with each stays before the first record read and not yet
committed (a record committed ahead of it is dropped by step 1 if a crash makes the loader read
it again).

A kill -9 before a COMMIT loses that whole transaction and the next start reads the same
records again; after it, the position in DuckDB already covers them. So no record is lost and
none is loaded twice, whatever the moment of the crash. On the NATS log the records come
from the shared consumer instead and are acknowledged after COMMIT; a repeat is dropped by
step 1 (`trackd.warehouse.feed`).

A batch that fails is retried; if it keeps failing it is split in halves down to single
records, and a record that cannot be loaded even alone is written to `_trackd.load_errors`
(with the position, in one transaction) so one bad message never stops the warehouse. Before
a message is written off, a canary (a plain track message, loaded in a transaction that is
rolled back) checks that the warehouse itself works: when the canary fails too, the fault is
not the message's (a bad upgrade, a broken file), and the loader retries the same records with
backoff instead of writing them off. A canary rolled back writes nothing, so it loads on a
full disk: an error that names the machine (no space left, over quota, a read-only file
system, an I/O error; on PostgreSQL SQLSTATE classes 53 and 58) is never the message's either.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import duckdb

from trackd.log.choice import as_source, reader_of
from trackd.log.protocol import LogSource
from trackd.log.reader import LogReader
from trackd.log.records import Position, Record
from trackd.observability import Registry, get_logger
from trackd.settings import WarehouseSettings
from trackd.warehouse import ledger
from trackd.warehouse.batch import Batch
from trackd.warehouse.db import Database
from trackd.warehouse.duckstore import DuckStore
from trackd.warehouse.feed import ConsumerFeed, Feed, PositionFeed, ViolationFeed
from trackd.warehouse.flights import Flight, Flights
from trackd.warehouse.jobs import Jobs
from trackd.warehouse.loadmetrics import LoaderMetrics
from trackd.warehouse.schedule import Reads, Schedule
from trackd.warehouse.store import Store
from trackd.warehouse.violations import ViolationLoader

T = TypeVar("T")
PRUNE_INTERVAL = 3600.0
RETRIES = 3
_CANARY = (b'{"type":"track","event":"trackd canary","userId":"trackd-canary",'
           b'"messageId":"trackd-canary","properties":{"ok":true},'
           b'"receivedAt":"2024-01-01T00:00:00.000Z","timestamp":"2024-01-01T00:00:00.000Z"}')
log = get_logger("warehouse")


class Stopping(Exception):
    """Raised inside the loader thread to abandon a retry when the stage is stopping."""


class WarehouseFailing(Exception):
    """A message failed alone and so did the canary, or its error names the machine (a full
    disk): the warehouse is at fault, not the message."""


_MACHINE_FAULTS = ("No space left on device", "Disk quota exceeded", "Read-only file system",
                   "Input/output error")
_MACHINE_SQLSTATES = ("53", "58")  # PostgreSQL: insufficient resources, system error


def machine_fault(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) is a fault of the machine, not of a message."""
    seen: BaseException | None = exc
    for _ in range(8):  # a chain of causes, never a cycle
        if seen is None:
            return False
        if any(text in str(seen) for text in _MACHINE_FAULTS):
            return True
        sqlstate = getattr(seen, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate[:2] in _MACHINE_SQLSTATES:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class WarehouseLoader:
    """The warehouse stage. `start` opens the database and starts the loader thread.

    `load_available()` runs rounds in the calling thread until the log is drained; tests use it
    instead of `start` (the calling thread then is the one writer). `thread_setup` runs first
    in the loader thread, before the database is opened (the composition root lowers the
    thread's priority there, so ingest keeps the cores under load).
    """

    name = "warehouse"

    def __init__(self, settings: WarehouseSettings, database: Store | Database,
                 reader: LogReader | LogSource, metrics: Registry, *,
                 clock: Callable[[], datetime] = utcnow,
                 retry_delay: float = 0.2,
                 thread_setup: Callable[[], object] | None = None,
                 make_room: Callable[[], int] | None = None) -> None:
        self.settings = settings
        # Where rows go (`store.Store`): a `Database` is the embedded DuckDB file.
        self.store: Store = (database if isinstance(database, Store)
                             else DuckStore(database, settings.max_columns_per_table))
        self.source = as_source(reader)
        local = reader_of(reader)
        # On NATS the feed needs the running event loop: `start` makes it.
        self.feed: Feed | None = PositionFeed(local) if local is not None else None
        self.clock = clock
        self.retry_delay = retry_delay
        self.thread_setup = thread_setup
        # Called when a batch runs out of memory: interrupts the admin queries sharing DuckDB's
        # memory, returns how many; the batch is then tried again (not counted as a failure).
        self.make_room = make_room
        self.catalog = self.store.catalog
        self.position: Position = {}
        # Records the schedule left for the next round, and every record read and not committed
        self.schedule = Schedule(self.catalog, settings.max_tables_per_source)
        self._pending: list[Record] = []
        self._reads = Reads({})
        self._flights = Flights(self.store)  # loaded, COMMIT not seen yet
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._jobs = Jobs()
        self._last_prune = 0.0
        self._window = timedelta(days=max(0.0, settings.dedup_window_days))
        self._batch_rows = max(1, settings.batch_rows)
        self.violations = ViolationLoader(local, self._batch_rows) if local else None
        self._violation_feed: ViolationFeed | None = None  # NATS: made by `start`
        self.metrics = LoaderMetrics(metrics)

    # -- lifecycle ------------------------------------------------------------------------
    def open(self) -> None:
        """Open the database and resume from the position committed in it."""
        self.store.open()
        self.position = self.store.position()
        self._pending, self._reads = [], Reads(self.position)
        self._feed().open(self.position)

    def _feed(self) -> Feed:
        if self.feed is None:
            raise RuntimeError("the warehouse loader on the NATS log runs only after start()")
        return self.feed

    async def start(self) -> None:
        """Start the loader thread; returns once it has opened the database (or raises why it
        could not)."""
        self._stop.clear()
        if self.feed is None:
            from trackd.log.jetstream import JetStreamLog

            loop = asyncio.get_running_loop()
            self.feed = ConsumerFeed(self.source, loop)
            if isinstance(self.source, JetStreamLog):
                self._violation_feed = ViolationFeed(self.source, loop)
                self.violations = ViolationLoader(self._violation_feed, self._batch_rows)
        opened: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(opened,),
                                        name="warehouse-loader", daemon=True)
        self._thread.start()
        await asyncio.wrap_future(opened)

    async def stop(self) -> None:
        """Finish the batch in flight; the thread then closes the database."""
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def _run(self, opened: concurrent.futures.Future[None]) -> None:
        if self.thread_setup is not None:  # e.g. a lower priority; DuckDB's threads inherit it
            self.thread_setup()
        try:
            self.open()
        except BaseException as exc:
            self.store.close()
            opened.set_exception(exc)
            return
        opened.set_result(None)
        try:
            self._loop()
        finally:
            self._land_last()
            self._jobs.fail(lambda: Stopping("the warehouse loader stopped"))
            if self._pending:  # stopped by a failing load: on NATS, give them back now
                self._feed().failed(self._pending)
            self._feed().close()
            if self._violation_feed is not None:
                self._violation_feed.close()
            self.store.close()

    def _loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set() or self._pending:  # a stop finishes the read in flight
            try:
                loaded = self.load_once()
                backoff = 0.5
            except Stopping:
                return
            except Exception:
                if self._stop.is_set():  # stopping: what is pending is read again next time
                    log.exception("warehouse load failed while stopping; left for the next start")
                    return
                log.exception("warehouse load failed; retrying", extra={"in": backoff})
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            if loaded < self._batch_rows and not self._pending and not self._flights:
                self._stop.wait(self.settings.poll_interval)  # (a batch in flight: a backlog)

    # -- loading ------------------------------------------------------------------------
    def load_available(self) -> int:
        """Load until the log has nothing more; returns how many records were consumed."""
        total = 0
        while True:
            count = self.load_once()
            total += count
            if count == 0 and not self._pending and not self._flights:
                return total

    def load_once(self) -> int:
        """One round: read a batch, load it in the transactions `schedule` splits it into
        (each split further on failure), mirror the position; returns the records committed.

        Jobs (`submit`) run after every record read before them is committed: a deletion then
        cannot be followed by a record of its subject that the loader still held."""
        committed = 0
        while (self._pending or self._flights) and not self._jobs.empty():
            committed += self._commit([])
        if not self._flights:
            self._jobs.run(self.store)
        self._maybe_prune()
        if self.violations is not None:  # <source>._violations
            committed += self.store.load_violations(self.violations)
            if self._violation_feed is not None:
                self._violation_feed.done()
        return committed + self._commit(self._read(self._feed()))

    def _commit(self, records: list[Record]) -> int:
        """Load what waits and `records`, in the schedule's order, as far as it says; returns
        the records acknowledged. The last batch may be left committing (`Store.overlap`)
        while the reads come full; it is acknowledged once it is seen committed (`_land`)."""
        parts, later = self.schedule.split(self._pending + records)
        self._pending = later
        before = self._flights.records()
        committed = 0
        try:
            for part in parts:
                committed += self._overlapping(part)
            if len(records) < self._batch_rows:  # no backlog: no reason to wait for the next
                committed += self._land()
        except BaseException:  # what is not committed comes again in the next round
            self._pending = self._flights.others(self._reads.unsettled(
                before + [r for p in parts for r in p])) + later
            raise
        return committed

    def _overlapping(self, part: list[Record]) -> int:
        """Load `part` while the batch before it commits, then land all but `Store.overlap`
        batches; returns the records acknowledged. A part that fails to load is loaded again
        the careful way (`_load_resilient`) after what flies landed."""
        if self._stop.is_set():
            raise Stopping("the loader is stopping")
        try:
            self._launch(part)
        except Exception as exc:
            self._failed(part, 1, exc)
            committed = self._land()
            self._load_resilient(part, first=1)
            self._feed().done(part, self.position)
            return committed + len(part)
        return self._land(keep=self.store.overlap)

    def _land(self, keep: int = 0) -> int:
        """Acknowledge the batches in flight that committed, oldest first, until `keep` are
        left; returns their records. A failed COMMIT drops every batch in flight (none after it
        was started): they are loaded again the careful way, in order."""
        committed = 0
        while len(self._flights) > keep:
            try:
                flight = self._flights.land()
            except Exception as exc:
                dropped = self._flights.dropped
                self._failed(dropped[0], 1, exc)
                for i, part in enumerate(dropped):  # the first failed; the others waited on it
                    self._load_resilient(part, first=1 if i == 0 else 0)
                    self._feed().done(part, self.position)
                    committed += len(part)
                return committed
            self._adopt(flight)
            self._feed().done(flight.records, self.position)
            committed += len(flight.records)
        return committed

    def _land_last(self) -> None:
        """Stopping: acknowledge the batches in flight that commit; the others wait for the
        next start (on NATS they are given back with what is pending)."""
        flying = self._flights.records()
        try:
            while self._flights:
                flight = self._flights.land()
                self._adopt(flight)
                self._feed().done(flight.records, self.position)
        except Exception:
            log.exception("the warehouse batch in flight failed; left for the next start")
        self._flights.abandon()
        self._pending = self._reads.unsettled(flying) + self._pending

    def _read(self, feed: Feed) -> list[Record]:
        """New records after those read before; fewer while many wait for the next round
        (none once twice `batch_rows` wait, or when stopping)."""
        waiting = len(self._pending)
        limit = self._batch_rows - waiting
        if waiting:
            limit = max(limit, self._batch_rows // 4, 1)
            if waiting >= 2 * self._batch_rows or self._stop.is_set():
                limit = 0
        records = feed.read(limit, self._reads.after) if limit else []
        self._reads.add(records)
        return records

    def submit(self, job: Callable[[Store], T]) -> concurrent.futures.Future[T]:
        """Run `job(store)` in the loader's thread between two batches: the way other
        parts (privacy deletion) write to the warehouse, whose write connection is the
        loader's alone. A job that closes the store (a rewrite of the file) opens it again."""
        return self._jobs.submit(job)

    def _load_resilient(self, records: list[Record], first: int = 0) -> None:
        """Load `records`, committed before it returns; `first`: attempts already made."""
        error: Exception | None = None
        for attempt in range(first, RETRIES):
            if attempt:
                self._stop.wait(self.retry_delay * attempt)
            if self._stop.is_set():
                raise Stopping("the loader is stopping")
            try:
                self._load(records)
                return
            except Exception as exc:
                error = exc
                self._failed(records, attempt + 1, exc)
        assert error is not None
        if machine_fault(error):  # halving cannot help, and no message is to blame
            raise WarehouseFailing(f"the warehouse cannot write ({type(error).__name__}: "
                                   f"{error}); retrying") from error
        if len(records) > 1:
            middle = len(records) // 2
            self._load_resilient(records[:middle])
            self._load_resilient(records[middle:])
            return
        self._record_failure(records[0], error)

    def _failed(self, records: list[Record], attempt: int, exc: Exception) -> None:
        self.metrics.failures.inc()
        log.warning("warehouse batch failed", extra={
            "records": len(records), "attempt": attempt, "error": str(exc)})

    def _load(self, records: list[Record]) -> None:
        """Load `records` and wait for their COMMIT (nothing else in flight)."""
        assert not self._flights
        self._launch(records)
        self._adopt(self._flights.land())

    def _launch(self, records: list[Record]) -> None:
        """`_judge_and_load`; once more after interrupting the queries if it ran out of
        memory."""
        try:
            self._judge_and_load(records)
        except duckdb.OutOfMemoryException:
            interrupted = self.make_room() if self.make_room is not None else 0
            if not interrupted:
                raise
            self.metrics.interrupted.inc((), interrupted)
            log.warning("warehouse batch ran out of memory; admin queries were interrupted")
            self._stop.wait(0.1)  # their memory is released as they unwind
            self._judge_and_load(records)

    def _judge_and_load(self, records: list[Record]) -> None:
        """Judge `records` against the ledger and hand them to the store, with the position
        once they (and the batches in flight, which commit first) are committed."""
        started = time.perf_counter()
        batch = Batch(self.catalog, self._window, self.clock(),
                      self.settings.max_tables_per_source)
        keys = [ledger.message_key(r.source, r.message_id) for r in records]
        batch.judge(self.store.find(keys), records, keys)
        position = self._reads.position_with(self._flights.position(self.position),
                                             self._flights.records() + records)
        conflicts = self.store.load(batch, position)
        self._flights.add(Flight(records, batch, position, conflicts, started))

    def _adopt(self, flight: Flight) -> None:
        """`flight` committed: its records, position and metrics."""
        self._reads.settle(flight.records)
        self.position = flight.position
        self.metrics.committed(flight, self.clock())

    def _record_failure(self, record: Record, exc: Exception) -> None:
        if not self._canary_loads(record.source):
            raise WarehouseFailing(
                f"the warehouse cannot load even a plain message ({type(exc).__name__}: "
                f"{exc}); retrying") from exc
        log.error("message could not be loaded; recorded in _trackd.load_errors",
                  extra={"message_id": record.message_id, "error": str(exc)})
        row = (record.source, record.message_id, record.type, record.received_at, self.clock(),
               f"{type(exc).__name__}: {exc}"[:2000], record.shard, record.offset)
        position = self._reads.position_with(self.position, [record])
        self.store.record_errors([row], position)
        self._reads.settle([record])
        self.position = position
        self.metrics.errors.inc()

    def _canary_loads(self, source: str) -> bool:
        """Whether a plain track message for `source` loads (rolled back: nothing is kept)."""
        canary = Record("trackd-canary", 0, source, "trackd-canary", "track",
                        "2024-01-01T00:00:00.000Z", _CANARY)
        batch = Batch(self.catalog, self._window, self.clock(),
                      self.settings.max_tables_per_source)
        try:
            batch.judge({}, [canary])
            self.store.try_load(batch)
            return True
        except Exception:
            log.exception("the warehouse canary failed")
            return False

    def _maybe_prune(self) -> None:
        if time.monotonic() - self._last_prune < PRUNE_INTERVAL:
            return
        self._last_prune = time.monotonic()
        try:
            self.store.prune(self.clock())
        except Exception:
            log.exception("pruning profile events failed")
