"""log -> warehouse: the `warehouse` consumer loads micro-batches into DuckDB, exactly once.

One thread (the loader's) opens the file, does every write, and closes it. Each round it reads
up to `batch_rows` records after the position stored in DuckDB, and in ONE DuckDB transaction:

1. drops messages already loaded for their source (the ledger, `batch.is_duplicate`),
2. creates the schemas, tables and columns the rows need (`catalog`),
3. inserts each table's rows in bulk from Arrow, and upserts users/accounts (`upsert`),
4. writes the ledger, duplicates, profile events and the new log position (`ledger`),

then COMMITs, and only then mirrors the position to the log (`LogReader.commit`, which drives
lag metrics and trimming). A kill -9 before the COMMIT loses the whole transaction and the next
start reads the same records again; after it, the position in DuckDB already covers them. So
no record is lost and none is loaded twice, whatever the moment of the crash.

A batch that fails is retried; if it keeps failing it is split in halves down to single
records, and a record that cannot be loaded even alone is written to `_trackd.load_errors`
(with the position, in one transaction) so one bad message never stops the warehouse. Before
a message is written off, a canary (a plain track message, loaded in a transaction that is
rolled back) checks that the warehouse itself works: when the canary fails too, the fault is
not the message's (a full disk, a bad upgrade), and the loader retries the same records with
backoff instead of writing them off.
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

from trackd.log.reader import LogReader
from trackd.log.records import Position, Record, advanced
from trackd.observability import Registry, get_logger
from trackd.settings import WarehouseSettings
from trackd.warehouse import ledger, sql
from trackd.warehouse.batch import Batch
from trackd.warehouse.catalog import Catalog
from trackd.warehouse.db import Database
from trackd.warehouse.violations import ViolationLoader

CONSUMER = "warehouse"
T = TypeVar("T")
PRUNE_INTERVAL = 3600.0
RETRIES = 3
_CANARY = (b'{"type":"track","event":"trackd canary","userId":"trackd-canary",'
           b'"messageId":"trackd-canary","properties":{"ok":true},'
           b'"receivedAt":"2024-01-01T00:00:00.000Z","timestamp":"2024-01-01T00:00:00.000Z"}')
log = get_logger("warehouse")
_FRESHNESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)


class Stopping(Exception):
    """Raised inside the loader thread to abandon a retry when the stage is stopping."""


class WarehouseFailing(Exception):
    """A message failed alone and so did the canary: the warehouse is at fault, not it."""


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

    def __init__(self, settings: WarehouseSettings, database: Database, reader: LogReader,
                 metrics: Registry, *, clock: Callable[[], datetime] = utcnow,
                 retry_delay: float = 0.2,
                 thread_setup: Callable[[], object] | None = None,
                 make_room: Callable[[], int] | None = None) -> None:
        self.settings = settings
        self.database = database
        self.reader = reader
        self.clock = clock
        self.retry_delay = retry_delay
        self.thread_setup = thread_setup
        # Called when a batch runs out of memory: interrupts the admin queries sharing DuckDB's
        # memory, returns how many; the batch is then tried again (not counted as a failure).
        self.make_room = make_room
        self.catalog = Catalog(max_columns=settings.max_columns_per_table)
        self.position: Position = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0
        self._window = timedelta(days=max(0.0, settings.dedup_window_days))
        self._batch_rows = max(1, settings.batch_rows)
        self.violations = ViolationLoader(reader, self._batch_rows)
        self._loaded = metrics.counter("trackd_warehouse_messages_loaded_total",
                                       "Messages loaded into the warehouse.", ("source",))
        self._duplicates = metrics.counter("trackd_warehouse_duplicates_total",
                                           "Messages not loaded: a repeat of a loaded messageId.",
                                           ("source",))
        self._conflicts = metrics.counter("trackd_warehouse_type_conflicts_total",
                                          "Rows with a value kept in _type_conflicts.")
        self._overflows = metrics.counter(
            "trackd_warehouse_overflow_total",
            "Rows with values kept in _overflow: beyond a table's column limit (limit=columns) "
            "or an event beyond the source's table limit (limit=tables).", ("source", "limit"))
        self._errors = metrics.counter("trackd_warehouse_load_errors_total",
                                       "Messages that could not be loaded (see load_errors).")
        self._failures = metrics.counter("trackd_warehouse_batch_failures_total",
                                         "Load transactions that failed and were retried.")
        self._interrupted = metrics.counter(
            "trackd_warehouse_queries_interrupted_total",
            "Admin queries interrupted to give their memory to a load that ran out of it.")
        self._seconds = metrics.histogram("trackd_warehouse_batch_seconds",
                                          "Time of one load transaction.")
        self._freshness = metrics.histogram(
            "trackd_warehouse_freshness_seconds",
            "From receivedAt to the row being queryable (commit).", _FRESHNESS_BUCKETS)

    # -- lifecycle ------------------------------------------------------------------------
    def open(self) -> None:
        """Open the database and resume from the position committed in it."""
        if not self.database.is_open:
            self.database.open()
        con = self.database.writer()
        sql.install(con)
        self.catalog.load(con)
        self.position = ledger.position(con)
        self.reader.register(CONSUMER)
        self.reader.commit(CONSUMER, self.position)  # a crash may have left the log behind

    async def start(self) -> None:
        """Start the loader thread; returns once it has opened the database (or raises why it
        could not)."""
        self._stop.clear()
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
            self.database.close()
            opened.set_exception(exc)
            return
        opened.set_result(None)
        try:
            self._loop()
        finally:
            self.database.close()

    def _loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                loaded = self.load_once()
                backoff = 0.5
            except Stopping:
                return
            except Exception:
                log.exception("warehouse load failed; retrying", extra={"in": backoff})
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            if loaded < self._batch_rows:
                self._stop.wait(self.settings.poll_interval)

    # -- loading ------------------------------------------------------------------------
    def load_available(self) -> int:
        """Load until the log has nothing more; returns how many records were consumed."""
        total = 0
        while True:
            count = self.load_once()
            total += count
            if count == 0:
                return total

    def load_once(self) -> int:
        """One round: read a batch, load it (splitting it on failure), mirror the position."""
        self._maybe_prune()
        moved = self.violations.load_once(self.database.writer())  # <source>._violations
        records = self.reader.read(CONSUMER, limit=self._batch_rows, position=self.position)
        if not records:
            return moved
        self._load_resilient(records)
        try:
            self.reader.commit(CONSUMER, self.position)
        except Exception:  # only lag metrics and trimming wait for it; DuckDB has the truth
            log.exception("could not mirror the warehouse position to the log")
        return moved + len(records)

    def _load_resilient(self, records: list[Record]) -> None:
        error: Exception | None = None
        for attempt in range(RETRIES):
            if attempt:
                self._stop.wait(self.retry_delay * attempt)
            if self._stop.is_set():
                raise Stopping("the loader is stopping")
            try:
                self._load_making_room(records)
                return
            except Exception as exc:
                error = exc
                self._failures.inc()
                log.warning("warehouse batch failed", extra={
                    "records": len(records), "attempt": attempt + 1, "error": str(exc)})
        if len(records) > 1:
            middle = len(records) // 2
            self._load_resilient(records[:middle])
            self._load_resilient(records[middle:])
            return
        assert error is not None
        self._record_failure(records[0], error)

    def _load_making_room(self, records: list[Record]) -> None:
        """`_load`; once more after interrupting the queries if it ran out of memory."""
        try:
            self._load(records)
        except duckdb.OutOfMemoryException:
            interrupted = self.make_room() if self.make_room is not None else 0
            if not interrupted:
                raise
            self._interrupted.inc((), interrupted)
            log.warning("warehouse batch ran out of memory; admin queries were interrupted")
            self._stop.wait(0.1)  # their memory is released as they unwind
            self._load(records)

    def _load(self, records: list[Record]) -> None:
        started = time.perf_counter()
        con = self.database.writer()
        now = self.clock()
        batch = Batch(self.catalog, self._window, now, self.settings.max_tables_per_source)
        keys = [ledger.message_key(r.source, r.message_id) for r in records]
        batch.judge(ledger.find(con, keys), records, keys)
        conflicts = self._in_transaction(advanced(self.position, records), batch.write)
        committed = self.clock()
        for source, count in batch.loaded.items():
            self._loaded.inc((source,), count)
        for source, count in batch.duplicates.items():
            self._duplicates.inc((source,), count)
        self._conflicts.inc((), conflicts)
        for (source, limit), count in batch.overflows.items():
            self._overflows.inc((source, limit), count)
        for received, count in batch.received.items():
            self._freshness.observe(max(0.0, (committed - received).total_seconds()),
                                    count=count)
        self._seconds.observe(time.perf_counter() - started)

    def _record_failure(self, record: Record, exc: Exception) -> None:
        if not self._canary_loads(record.source):
            raise WarehouseFailing(
                f"the warehouse cannot load even a plain message ({type(exc).__name__}: "
                f"{exc}); retrying") from exc
        log.error("message could not be loaded; recorded in _trackd.load_errors",
                  extra={"message_id": record.message_id, "error": str(exc)})
        row = (record.source, record.message_id, record.type, record.received_at, self.clock(),
               f"{type(exc).__name__}: {exc}"[:2000], record.shard, record.offset)
        self._in_transaction(advanced(self.position, [record]), lambda con: ledger.insert(
            con, "load_errors", ledger.LOAD_ERRORS, [row]))
        self._errors.inc()

    def _in_transaction(self, position: Position,
                        write: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """`write` and the new position in ONE transaction; the position is adopted after COMMIT."""
        con = self.database.writer()
        con.begin()
        try:
            result = write(con)
            ledger.save_position(con, position)
            con.commit()
        except BaseException:
            self._rollback(con)
            raise
        self.position = position
        return result

    def _canary_loads(self, source: str) -> bool:
        """Whether a plain track message for `source` loads (rolled back: nothing is kept)."""
        canary = Record("trackd-canary", 0, source, "trackd-canary", "track",
                        "2024-01-01T00:00:00.000Z", _CANARY)
        con = self.database.writer()
        batch = Batch(self.catalog, self._window, self.clock(),
                      self.settings.max_tables_per_source)
        try:
            batch.judge({}, [canary])
            con.begin()
            batch.write(con)
            return True
        except Exception:
            log.exception("the warehouse canary failed")
            return False
        finally:
            self._rollback(con)

    def _rollback(self, con: duckdb.DuckDBPyConnection) -> None:
        """Undo a failed transaction, and forget the DDL it ran (the catalog is re-read)."""
        try:
            con.rollback()
            self.catalog.load(con)
        except duckdb.Error:  # the next attempt fails too and says why
            log.exception("could not roll back the warehouse transaction")

    def _maybe_prune(self) -> None:
        if time.monotonic() - self._last_prune < PRUNE_INTERVAL:
            return
        self._last_prune = time.monotonic()
        con = self.database.writer()
        con.begin()
        try:
            ledger.prune(con, self.clock())
            con.commit()
        except duckdb.Error:
            log.exception("pruning profile events failed")
            self._rollback(con)
