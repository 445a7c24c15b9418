"""Shared types of the client pipeline: a queued item and the two user callbacks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Message = dict[str, Any]
"""One wire message, as sent: camelCase keys, JSON values only."""

OnError = Callable[[Exception, list[Message]], object]
"""`on_error(error, batch)`: called once per undelivered batch (or dropped message)."""

Callback = Callable[[Exception | None, Message], object]
"""`callback(error, message)`: called once per message; `error` is None when it was delivered."""


@dataclass(frozen=True, slots=True)
class Item:
    """A validated message waiting to be sent, with its JSON encoding fixed at call time."""

    message: Message
    encoded: bytes
    callback: Callback | None = None
