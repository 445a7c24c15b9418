"""Shared protocols: the seams between the composition root and the stages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class Stage(Protocol):
    """A pipeline stage consuming the log in the pipeline process.

    `start` launches its background work; `stop` finishes what is in flight (its offsets are
    committed only after its output is durable) and returns when it has stopped.
    """

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Lookup(Protocol):
    """Contributes to "where is my event": what this stage knows about one messageId."""

    def lookup(self, message_id: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class QueryResult:
    """A query's answer: its columns, its rows, and whether rows were left out (the row or byte
    cap was reached)."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool = False


class QueryEngine(Protocol):
    """Read-only SQL over the warehouse. Raises QueryRefused for anything that writes.

    `query` runs in the calling thread; `run` runs on the engine's own bounded pool (the admin
    API uses it, so queries never take the threads of other work). `limit` lowers the engine's
    row cap for one query. `interrupt_all` ends every running query (its answer gives `reason`).
    """

    def query(self, sql: str, *, limit: int | None = None) -> QueryResult: ...

    async def run(self, sql: str, *, limit: int | None = None) -> QueryResult: ...

    def interrupt_all(self, reason: str, *, wait: float = 0.0) -> int: ...
