"""The log seam: what the gateway and the stages may rely on, whichever log runs underneath.

Two logs sit behind it: the embedded SQLite shards (`trackd.log.sqlite`, the default) and NATS
JetStream (`trackd.log.jetstream`, for several hosts). Both give the same guarantees at the
level below; each adds one thing of its own, said at the end.

Producer (the gateway): `LogProducer.append(entries, refused)` returns only once every entry
and refused message is durable, and raises a `LogError` otherwise (`LogFull`: back-pressure;
`LogUnavailable`: the log's servers are unreachable; `LogWriteFailed`: the write failed;
`LogClosed`: shutting down), which the gateway answers with 503 and Retry-After, never 200. A
failed append may have stored some of its messages: the client retries the request, and the
copies are removed by messageId (on JetStream already at the log, within its duplicate window;
on either log in the warehouse).

  - SQLite: durable = committed and fsync'd on this host's disk.
  - JetStream: durable = a PubAck for every message, i.e. stored by a quorum of the stream's
    replicas (JetStream's own fsync runs on its sync interval).

Consumers (the stages): `LogSource.consumer(name)` returns the named consumer's handle; the
name is the stage's (`warehouse`, `archive`, `destination:<name>`).

- `read(limit, wait)` gives records not yet acknowledged by this name. `ack(records)` after
  the stage's side effect is durable; acknowledged records are not given to this name again.
- Records read and never acknowledged (the process died, the stage failed, or it called
  `retry(records, delay)`) are given again: delivery is AT LEAST ONCE. A stage that must not
  repeat a side effect removes repeats by (source, messageId), which every record carries;
  the warehouse's ledger and the destination ledger already do.
- Per shard (SQLite) / per stream (JetStream), records come in log order the first time; a
  redelivered record may come after later ones.
- `lag(name)`: records this name has not acknowledged yet. `find(messageId)` and
  `quarantined(...)` answer "where is my event" for what the log still holds. `trim()` drops
  records every registered consumer has acknowledged.

What differs, and what a stage may rely on only where it holds:

- SQLite (`PositionedConsumer`): one process reads a name; `read` continues after what this
  handle has read (its cursor), `ack` is cumulative per shard (acknowledging a record
  acknowledges every earlier one of its shard, so ack in read order), `retry` rewinds the
  cursor. `seek(position)` lets a stage keep its own position with its output: the warehouse
  stores it in the DuckDB transaction that loads the rows, so a crash at any moment neither
  loses nor repeats a row (EXACTLY ONCE, not depending on messageId).
- JetStream: a name is one durable pull consumer with explicit acks, shared by every process
  that opens it (they split the work; no message goes to two of them at once). A record not
  acknowledged within `ack_wait` (a process died) or given back with `retry(delay)` (a nak
  with that delay) is delivered again, to any of them. There is no position a stage could keep
  with its output, so exactly-once output comes from removing repeats by messageId in the
  same transaction as the output (the warehouse's ledger; PostgreSQL's merge on `id`).
  `extend(records)` holds records until they are acknowledged or retried, however long that
  takes (the handle keeps telling JetStream that work on them goes on), so they go to another
  process only if this one dies: a destination acknowledges its records only once delivered
  or dead-lettered, and holds them meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

from trackd.log.records import Entry, Position, Record, Refused, Violation

Start = Literal["first", "new"]
"""Where a consumer seen for the first time begins: the oldest record kept, or only records
appended from now on (a new destination: `trackd replay` sends it the past). "Now" is when
the process first asked for the consumer, even if the log's servers answered only later."""

Quarantined = dict[str, object]
"""A refused message: shard, id, receivedAt, source, messageId, batchIndex, reason, body."""


class LogAppender(Protocol):
    """What the tracking API needs of a log: `LogProducer.append`."""

    async def append(self, entries: Sequence[Entry], refused: Sequence[Refused] = (),
                     violations: Sequence[Violation] = ()) -> None: ...


class LogProducer(Protocol):
    """The gateway's side: appends accepted and refused messages, durable on return."""

    @property
    def healthy(self) -> bool:
        """False while the log cannot take messages (the readiness probe says so)."""
        ...

    async def start(self) -> None: ...

    async def append(self, entries: Sequence[Entry], refused: Sequence[Refused] = (),
                     violations: Sequence[Violation] = ()) -> None:
        """Store `entries`, `refused` and their tracking plan `violations`; return once all
        are durable, or raise a LogError."""
        ...

    async def close(self) -> None:
        """Finish the appends in flight, then release the log."""
        ...


class LogConsumer(Protocol):
    """One stage's handle on its named consumer (see the module docstring)."""

    name: str

    async def read(self, limit: int, *, wait: float = 0.0) -> list[Record]:
        """Up to `limit` records not yet acknowledged; waits up to `wait` s for the first."""
        ...

    async def ack(self, records: Sequence[Record]) -> None:
        """The side effect of `records` is durable: never give them to this name again."""
        ...

    async def retry(self, records: Sequence[Record], *, delay: float) -> None:
        """Give `records` again, not before `delay` seconds."""
        ...

    async def extend(self, records: Sequence[Record]) -> None:
        """Still working on `records`: do not redeliver them before `ack` or `retry` while
        this process lives."""
        ...

    async def close(self) -> None:
        """Stop reading; what is read and not acknowledged is delivered again later."""
        ...


@runtime_checkable
class PositionedConsumer(LogConsumer, Protocol):
    """A consumer whose position a stage may keep with its own output (the SQLite log)."""

    async def position(self) -> Position:
        """The acknowledged position (per shard, the last offset acknowledged)."""
        ...

    async def seek(self, position: Position) -> None:
        """Continue reading after `position` (and acknowledge up to it)."""
        ...


class LogSource(Protocol):
    """The pipeline's side of the log: consumers, lag, lookups and trimming."""

    async def start(self) -> None:
        """Connect (NATS: keeps trying in the background if the servers are not there yet)."""
        ...

    async def consumer(self, name: str, *, start: Start = "first") -> LogConsumer:
        """The handle of consumer `name`, registered (trimming waits for it) if it was not."""
        ...

    async def consumers(self) -> list[str]: ...

    async def unregister(self, name: str) -> None:
        """Forget a consumer, so trimming no longer waits for it."""
        ...

    async def lag(self, name: str) -> int:
        """Records `name` has not acknowledged yet (0 for an unknown name)."""
        ...

    async def find(self, message_id: str, source: str | None = None) -> list[Record]:
        """Records with this messageId still in the log (a scan: for lookups only)."""
        ...

    async def quarantined(self, *, source: str | None = None, message_id: str | None = None,
                          limit: int = 100) -> list[Quarantined]:
        """Refused messages with their reasons, newest first."""
        ...

    async def trim(self) -> int:
        """Drop the records every registered consumer has acknowledged; how many."""
        ...

    async def close(self) -> None: ...
