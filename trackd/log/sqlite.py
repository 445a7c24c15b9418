"""The embedded SQLite log behind the seam of `trackd.log.protocol` (no change of behaviour).

`SqliteProducer` wraps a shard's `LogWriter`; `SqliteLog` wraps the `LogReader` of the log
directory and hands out `SqliteConsumer`s. The reader is thread-safe and blocking, so each call
runs in a worker thread; the writer already resolves `append` on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from trackd.log.protocol import Quarantined, Start
from trackd.log.reader import LogReader
from trackd.log.records import Entry, Position, Record, Refused, Violation, advanced
from trackd.log.writer import LogWriter


class SqliteProducer:
    """A `LogProducer`: one gateway worker's shard."""

    def __init__(self, writer: LogWriter) -> None:
        self.writer = writer

    @property
    def healthy(self) -> bool:
        return self.writer.healthy

    async def start(self) -> None:
        self.writer.start(asyncio.get_running_loop())

    async def append(self, entries: Sequence[Entry], refused: Sequence[Refused] = (),
                     violations: Sequence[Violation] = ()) -> None:
        await self.writer.append(entries, refused, violations)

    async def close(self) -> None:
        await asyncio.to_thread(self.writer.close)


class SqliteConsumer:
    """A `PositionedConsumer`: reads after its cursor, acknowledges by committing offsets."""

    def __init__(self, reader: LogReader, name: str, position: Position) -> None:
        self.reader = reader
        self.name = name
        self._cursor = dict(position)

    async def read(self, limit: int, *, wait: float = 0.0) -> list[Record]:
        records = await asyncio.to_thread(self.reader.read, self.name, limit, self._cursor)
        if not records and wait > 0:
            await asyncio.sleep(wait)  # no notification from another process's shard: poll
            records = await asyncio.to_thread(self.reader.read, self.name, limit, self._cursor)
        self._cursor = advanced(self._cursor, records)
        return records

    async def ack(self, records: Sequence[Record]) -> None:
        await asyncio.to_thread(self.reader.commit, self.name, records)

    async def retry(self, records: Sequence[Record], *, delay: float) -> None:
        """Rewind the cursor to before `records`; they (and what followed) come again."""
        for record in records:
            if record.offset <= self._cursor.get(record.shard, 0):
                self._cursor[record.shard] = record.offset - 1
        if delay > 0:
            await asyncio.sleep(delay)

    async def extend(self, records: Sequence[Record]) -> None:
        """Nothing to do: nobody else reads this name's records meanwhile."""

    async def position(self) -> Position:
        return await asyncio.to_thread(self.reader.position, self.name)

    async def seek(self, position: Position) -> None:
        self._cursor = dict(position)
        await asyncio.to_thread(self.reader.commit, self.name, position)

    async def close(self) -> None:
        """Nothing held: the reader belongs to the `SqliteLog`."""


class SqliteLog:
    """A `LogSource` over the shards of one log directory."""

    def __init__(self, reader: LogReader) -> None:
        self.reader = reader

    async def start(self) -> None:
        """Nothing to connect to."""

    async def consumer(self, name: str, *, start: Start = "first") -> SqliteConsumer:
        def register() -> Position:
            if name not in self.reader.consumers() and start == "new":
                heads = {shard: offset for shard, offset in self.reader.heads().items()
                         if offset}
                if heads:
                    self.reader.commit(name, heads)
            self.reader.register(name)
            return self.reader.position(name)

        return SqliteConsumer(self.reader, name, await asyncio.to_thread(register))

    async def consumers(self) -> list[str]:
        return await asyncio.to_thread(self.reader.consumers)

    async def unregister(self, name: str) -> None:
        await asyncio.to_thread(self.reader.unregister, name)

    async def lag(self, name: str) -> int:
        def lag() -> int:
            return self.reader.lag(name) if name in self.reader.consumers() else 0

        return await asyncio.to_thread(lag)

    async def find(self, message_id: str, source: str | None = None) -> list[Record]:
        return await asyncio.to_thread(self.reader.find, message_id, source)

    async def quarantined(self, *, source: str | None = None, message_id: str | None = None,
                          limit: int = 100) -> list[Quarantined]:
        return await asyncio.to_thread(lambda: self.reader.quarantined(
            source=source, message_id=message_id, limit=limit))

    async def trim(self) -> int:
        return await asyncio.to_thread(self.reader.trim)

    async def close(self) -> None:
        await asyncio.to_thread(self.reader.close)
