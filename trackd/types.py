"""Shared protocols: the seams between the composition root and the stages."""

from __future__ import annotations

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


class QueryEngine(Protocol):
    """Read-only SQL over the warehouse. Raises QueryRefused for anything that writes."""

    def query(self, sql: str, *, limit: int = 10000) -> tuple[list[str], list[tuple[Any, ...]]]:
        ...
