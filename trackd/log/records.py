"""What goes into the log and what comes out of it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import groupby
from operator import attrgetter


@dataclass(slots=True)
class Entry:
    """An accepted message, enriched, as JSON bytes.

    Not frozen, unlike the others: one is built per accepted event on the hot path, and a
    frozen dataclass's `__init__` sets each field through `object.__setattr__` (about 4x
    slower). Nothing mutates or hashes an Entry once built.
    """

    source: str
    message_id: str
    type: str
    received_at: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Refused:
    """A refused message kept in quarantine with its reason."""

    source: str
    message_id: str | None
    received_at: str
    index: int | None
    reason: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Violation:
    """A message that broke its source's tracking plan, at one JSON path: written in the same
    commit as the message (accepted or refused), so the warehouse's `_violations` gets it."""

    source: str
    message_id: str | None
    received_at: str
    type: str
    event: str | None
    violation: str
    path: str
    rule: str
    message: str
    plan_version: int
    action: str


@dataclass(slots=True)
class Record:
    """An entry read back from the log, with its position.

    Not frozen, like `Entry` and for the same reason: consumers read tens of thousands a
    second, and nothing mutates or hashes one.
    """

    shard: str
    offset: int
    source: str
    message_id: str
    type: str
    received_at: str
    body: bytes


Position = dict[str, int]
_SHARD = attrgetter("shard")
_OFFSET = attrgetter("offset")


def advanced(position: Position, records: Iterable[Record]) -> Position:
    """A copy of `position` moved past `records` (per shard, the highest offset wins).

    The records of a read come shard by shard, so the per-record work runs in C (groupby,
    max); any order gives the same result."""
    out = dict(position)
    for shard, group in groupby(records, key=_SHARD):
        last = max(map(_OFFSET, group))
        if last > out.get(shard, 0):
            out[shard] = last
    return out
