"""processed log -> one destination: route, queue in the ledger, deliver with retries.

One `DestinationWorker` per destination, each a log consumer `destination:<name>` with its own
offset and its own tasks, so a slow or dead destination never holds back another one or the
warehouse. Two loops:

- intake: read the log after the consumer's position, decide routing for each record and
  store the rows in the ledger (durable). Where one process reads the consumer (a
  `PositionedConsumer`: the SQLite log), the ledger is the queue: the records are acknowledged
  right after, and a crash in between re-reads records the ledger already has, which it
  ignores (messageId + source is unique). Where the consumer is shared by several processes
  (the NATS log), each with its own ledger, a record is acknowledged only once its row is
  delivered, dead-lettered or skipped; until then the worker holds it (`extend`), so if this
  process dies the log redelivers it to another one, which delivers it (at least once).
- dispatch: ask the ledger for due rows (`Ledger.plan`: order per user, a user in one request at
  a time), post them with up to `concurrency` requests in flight, and record each outcome:
  2xx delivered; 408/429/5xx/network retried after the backoff or Retry-After; other 4xx, the
  last attempt, or a message older than max_age: dead letter, with its last error.

Delivery is at least once: a crash or a shutdown during a request sends it again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from trackd.destinations.ledger import Due, Intake, Ledger
from trackd.destinations.notices import Notices
from trackd.destinations.policy import Decision, Limits, Verdict, after_failure
from trackd.destinations.routing import Route, refusal
from trackd.destinations.senders import Sender
from trackd.errors import DeliveryError, RetryableDeliveryError
from trackd.log.choice import as_source, reader_of
from trackd.log.protocol import LogConsumer, LogSource, PositionedConsumer, Start
from trackd.log.reader import LogReader
from trackd.log.records import Record
from trackd.observability import Registry, get_logger
from trackd.settings import DestinationSettings

log = get_logger("destinations")
_decode = msgspec.json.Decoder().decode
PRUNE_INTERVAL = 600.0
MAX_WAIT = 1.0  # the dispatcher looks at the ledger at least this often
LAG_INTERVAL = 1.0  # on the NATS log, how often the intake asks for its consumer's lag


def consumer_name(destination: str) -> str:
    return f"destination:{destination}"


def intake_of(record: Record, route: Route) -> Intake:
    """A log record as a ledger row for `route`: user key, event name, and routing decision."""
    try:
        message: Any = _decode(record.body)
    except msgspec.DecodeError:
        message = None
    if not isinstance(message, dict):
        return Intake(record.message_id, record.source, f"message:{record.message_id}",
                      record.type, None, record.received_at, record.body,
                      "stored message is not a JSON object")
    user = message.get("userId") or message.get("anonymousId")
    user_key = f"user:{user}" if isinstance(user, str | int) else f"message:{record.message_id}"
    event = message.get("event")
    return Intake(record.message_id, record.source, user_key, record.type,
                  event if isinstance(event, str) else None, record.received_at, record.body,
                  refusal(message, record.source, route))


class DestinationWorker:
    """A pipeline `Stage`: the consumer `destination:<name>` of the log."""

    def __init__(self, settings: DestinationSettings, reader: LogReader | LogSource,
                 ledger: Ledger, sender: Sender, metrics: Registry, *,
                 clock: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random, read_limit: int = 500,
                 max_backlog: int = 100_000, stop_timeout: float = 5.0,
                 start_at: Start = "first") -> None:
        self.settings = settings
        self.name = consumer_name(settings.name)
        self.source = as_source(reader)
        self.reader = reader_of(reader)  # the SQLite log: its lag is read directly
        self.consumer: LogConsumer | None = None
        self._start_at = start_at
        self._log_lag = (0, 0.0)  # NATS: (records not acknowledged, when asked)
        self.ledger = ledger
        self.sender = sender
        self.route = Route.of(settings.name, settings.sources, settings.consent_categories)
        self.limits = Limits(settings.max_attempts, settings.max_age_hours * 3600.0,
                             settings.backoff_min, settings.backoff_max)
        self._clock = clock
        self._rand = rand
        self._read_limit = read_limit
        self._max_backlog = max_backlog
        self._stop_timeout = stop_timeout
        labels = ("destination",)
        self._delivered = metrics.counter("trackd_destination_delivered_total",
                                          "Messages a destination accepted (2xx).", labels)
        self._retried = metrics.counter("trackd_destination_retried_total",
                                        "Failed attempts that will be tried again.", labels)
        self._dead = metrics.counter("trackd_destination_dead_total",
                                     "Messages given up and kept as dead letters.", labels)
        self._skipped = metrics.counter("trackd_destination_skipped_total",
                                        "Messages not routed to a destination.", labels)
        self._lag = metrics.gauge("trackd_destination_lag",
                                  "Messages not yet delivered: unread in the log, pending or "
                                  "retrying in the ledger.", labels)
        self._labels = (settings.name,)
        self._notices = Notices(settings.name)
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        # A shared consumer's records held until their row is done: row id -> offset -> record.
        self._held: dict[int, dict[int, Record]] = {}
        # Held while records move from the log into the ledger (ledger write, then the log
        # position): in between they are in both, and the lag gauge would count them twice.
        self._moving = threading.Lock()
        metrics.on_collect(self.collect)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self._consumer()
        except Exception as exc:  # NATS not there yet: the intake keeps trying
            log.warning("destination cannot reach the log yet",
                        extra={"destination": self.settings.name, "error": str(exc)})
        self._stopping.clear()
        self._tasks = [asyncio.create_task(self._intake_forever(), name=f"{self.name}:intake"),
                       asyncio.create_task(self._dispatch_forever(),
                                           name=f"{self.name}:dispatch")]

    async def stop(self) -> None:
        """Stop reading, give in-flight requests `stop_timeout` to finish, then close."""
        self._stopping.set()
        self._wake.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._notices.flush(force=True)
        self._tasks = []
        if self.consumer is not None:
            await self.consumer.close()
        self._held.clear()  # not acknowledged: the log gives them to a process again
        await self.sender.aclose()
        with self._moving:
            self._closed = True
        self.ledger.close()

    def collect(self) -> None:
        """Refresh the lag gauge (called before each metrics snapshot)."""
        with self._moving:
            if self._closed:
                return
            unread = (self.reader.lag(self.name) if self.reader is not None
                      else self._log_lag[0])
            # held records are unacknowledged in the log and active in the ledger: count once
            backlog = unread + max(0, self.ledger.active() - len(self._held))
        self._lag.set(self._labels, float(backlog))

    async def _consumer(self) -> LogConsumer:
        if self.consumer is None:
            self.consumer = await self.source.consumer(self.name, start=self._start_at)
        return self.consumer

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # -- intake ----------------------------------------------------------------------------
    async def _intake_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                moved = await self._intake_once()
            except Exception:
                log.exception("destination intake failed; retrying",
                              extra={"destination": self.settings.name})
                await self._pause(max(1.0, self.settings.poll_interval))
                continue
            if not moved:
                await self._pause(self.settings.poll_interval)

    async def _intake_once(self) -> int:
        """Move one chunk of the log into the ledger; how many records it read."""
        if await asyncio.to_thread(self.ledger.active) >= self._max_backlog:
            return 0  # the log keeps the rest until the destination catches up
        consumer = await self._consumer()
        if self.reader is None and time.monotonic() - self._log_lag[1] >= LAG_INTERVAL:
            self._log_lag = (await self.source.lag(self.name), time.monotonic())
        records = await consumer.read(self._read_limit)
        if not records:
            return 0
        intakes = [intake_of(r, self.route) for r in records]
        if not isinstance(consumer, PositionedConsumer):
            added = await self._hold(consumer, records, intakes)
        elif self.reader is not None:  # SQLite: the ack is the position move, in one step
            added = await asyncio.to_thread(self._move, records, intakes)
        else:
            added = await asyncio.to_thread(self.ledger.add, intakes, self._clock())
            await consumer.ack(records)
        skipped = sum(1 for i in intakes if i.refusal is not None)
        if skipped:
            self._skipped.inc(self._labels, skipped)
        if added:
            self._wake.set()
        return len(records)

    async def _hold(self, consumer: LogConsumer, records: list[Record],
                    intakes: list[Intake]) -> int:
        """A shared consumer: store the rows, acknowledge the records whose row is done
        already (skipped, or delivered before a redelivery), hold the others until it is."""
        def store() -> tuple[int, dict[tuple[str, str], tuple[int, bool]]]:
            added = self.ledger.add(intakes, self._clock())
            return added, self.ledger.rows([(r.message_id, r.source) for r in records])

        added, rows = await asyncio.to_thread(store)
        done: list[Record] = []
        held: list[Record] = []
        for record in records:
            row_id, active = rows.get((record.message_id, record.source), (0, False))
            if active:
                self._held.setdefault(row_id, {})[record.offset] = record
                held.append(record)
            else:
                done.append(record)
        if held:
            await consumer.extend(held)
        if done:
            await consumer.ack(done)
        return added

    async def _settle(self, ids: list[int]) -> None:
        """Rows delivered or dead-lettered (durably): acknowledge the records held for them.
        If that fails they come again, and the ledger's row acknowledges them then."""
        records = [r for i in ids for r in self._held.pop(i, {}).values()]
        if not records or self.consumer is None:
            return
        try:
            await self.consumer.ack(records)
        except Exception as exc:
            log.warning("could not acknowledge delivered records; they come again",
                        extra={"destination": self.settings.name, "error": str(exc)})

    def _move(self, records: list[Record], intakes: list[Intake]) -> int:
        """Store the rows durably, then move the log position past them (one step for
        `collect`, so the lag never counts them in both places)."""
        assert self.reader is not None  # the SQLite log's reader
        with self._moving:
            added = self.ledger.add(intakes, self._clock())
            self.reader.commit(self.name, records)
        return added

    # -- dispatch --------------------------------------------------------------------------
    async def _dispatch_forever(self) -> None:
        inflight: dict[asyncio.Task[None], frozenset[str]] = {}
        next_prune = 0.0
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                now = self._clock()
                wake_at: float | None = None
                try:
                    wake_at = await self._launch(now, inflight)
                    if now >= next_prune:
                        next_prune = now + PRUNE_INTERVAL
                        before = now - self.settings.ledger_retention_days * 86400.0
                        await asyncio.to_thread(self.ledger.prune, before)
                except Exception:
                    log.exception("destination dispatch failed; retrying",
                                  extra={"destination": self.settings.name})
                    wake_at = now + 1.0
                self._notices.flush()
                timeout = MAX_WAIT if wake_at is None else max(0.0, min(MAX_WAIT,
                                                                       wake_at - now))
                await self._wait(inflight, timeout)
        finally:
            if inflight:
                _, late = await asyncio.wait(list(inflight), timeout=self._stop_timeout)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)

    async def _launch(self, now: float, inflight: dict[asyncio.Task[None], frozenset[str]]
                      ) -> float | None:
        """Start the requests that are due; returns when to look again, if known."""
        slots = self.settings.concurrency - len(inflight)
        if slots <= 0:
            return None
        busy = frozenset().union(*inflight.values())
        plan = await asyncio.to_thread(self.ledger.plan, now, busy=busy, slots=slots,
                                       size=self.settings.batch_size)
        wake_at = plan.wake_at
        for batch in plan.batches:
            linger_until = self._linger_until(batch, plan.batches)
            if linger_until > now:
                wake_at = linger_until if wake_at is None else min(wake_at, linger_until)
                continue
            task = asyncio.create_task(self._deliver(batch))
            inflight[task] = frozenset(d.user_key for d in batch)
        return wake_at

    def _linger_until(self, batch: list[Due], batches: list[list[Due]]) -> float:
        """A lone partial batch of first attempts waits up to `linger` to fill up."""
        size = self.settings.batch_size
        if size <= 1 or len(batches) > 1 or len(batch) >= size:
            return 0.0
        if any(d.attempts for d in batch):
            return 0.0
        return min(d.enqueued_at for d in batch) + self.settings.linger

    async def _wait(self, inflight: dict[asyncio.Task[None], frozenset[str]],
                    timeout: float) -> None:
        waker = asyncio.create_task(self._wake.wait())
        try:
            await asyncio.wait([waker, *inflight], timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            waker.cancel()
        for task in [t for t in inflight if t.done()]:
            del inflight[task]
            if not task.cancelled() and task.exception() is not None:
                log.error("delivery task failed", exc_info=task.exception(),
                          extra={"destination": self.settings.name})

    async def _deliver(self, batch: list[Due]) -> None:
        ids = [d.id for d in batch]
        try:
            status = await self.sender.send([d.body for d in batch])
        except DeliveryError as exc:
            await self._failed(ids, exc)
            return
        except Exception as exc:  # a bug or an unexpected library error: retry, keep going
            log.exception("unexpected error while sending",
                          extra={"destination": self.settings.name})
            await self._failed(ids, RetryableDeliveryError(f"{type(exc).__name__}: {exc}"))
            return
        await asyncio.to_thread(self.ledger.delivered, ids, status, self._clock())
        self._delivered.inc(self._labels, len(ids))
        self._notices.delivered()
        await self._settle(ids)

    async def _failed(self, ids: list[int], exc: DeliveryError) -> None:
        verdict = Verdict.RETRY if isinstance(exc, RetryableDeliveryError) else Verdict.ABORT
        now = self._clock()
        rand = self._rand()  # one jitter for the request: its messages are retried together

        def decide(attempts: int, age: float) -> Decision:
            return after_failure(attempts=attempts, verdict=verdict, age=age, now=now,
                                 retry_after=exc.retry_after, limits=self.limits, rand=rand)

        outcomes = await asyncio.to_thread(self.ledger.failed, ids, decide, exc.status,
                                           str(exc), now)
        dead = sum(1 for o in outcomes if o.dead)
        if dead:
            await self._settle([o.id for o in outcomes if o.dead])
        if verdict is Verdict.RETRY:
            self._notices.retrying(len(outcomes), str(exc))
        if dead:
            self._dead.inc(self._labels, dead)
            self._notices.dead_lettered(dead, str(exc))
        if len(outcomes) - dead:
            self._retried.inc(self._labels, len(outcomes) - dead)
