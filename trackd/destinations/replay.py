"""Replay: send archived or dead-lettered messages to one destination again.

Each message is sent with `integrations` replaced by `{"All": false, "<destination>": true}`
(Segment spec 6.4); `context.consent` is kept, so the destination's consent categories and
source list still apply (a message they refuse is counted as skipped, not sent). Messages go
out in the order given (receivedAt for the archive, arrival for dead letters), one request at a
time in batches of the destination's `batch_size`, each retried per the destination's policy
(classify, backoff, Retry-After) up to `attempts` times. Dead letters a replay delivers become
`delivered` (`replayed`) in the ledger; those it cannot deliver stay dead with the new error.

Replay talks to the destination directly; it needs no running server and does not disturb one.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from trackd.destinations.ledger import Ledger
from trackd.destinations.policy import retry_delay
from trackd.destinations.routing import Route, refusal
from trackd.destinations.senders import Sender
from trackd.errors import DeliveryError, PermanentDeliveryError
from trackd.settings import DestinationSettings

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(text: str, now: datetime) -> datetime:
    """A --since/--until value: `7d`, `12h`, `30m` (ago), a date (UTC midnight) or an ISO
    timestamp (UTC when it has no offset). Raises ValueError on anything else."""
    text = text.strip()
    relative = _RELATIVE.match(text)
    if relative:
        return now - timedelta(seconds=float(relative.group(1)) * _UNITS[relative.group(2)])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use 2024-05-01, 2024-05-01T12:00:00Z, "
                         "7d, 12h or 30m)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def rewrite(body: bytes, destination: str) -> dict[str, Any] | None:
    """The message with `integrations` = {"All": false, destination: true}; None if unusable."""
    try:
        message: Any = _decode(body)
    except msgspec.DecodeError:
        return None
    if not isinstance(message, dict):
        return None
    message["integrations"] = {"All": False, destination: True}
    return message


@dataclass(frozen=True, slots=True)
class Item:
    """One message to replay; `ledger_id` set for a dead letter."""

    source: str
    message_id: str
    body: bytes
    ledger_id: int | None = None


@dataclass
class Summary:
    destination: str
    delivered: int = 0
    failed: int = 0
    skipped: int = 0
    last_error: str | None = None

    @property
    def total(self) -> int:
        return self.delivered + self.failed + self.skipped

    def line(self) -> str:
        text = (f"Replayed {self.total} message{'s' if self.total != 1 else ''} to "
                f"{self.destination}: {self.delivered} delivered, {self.failed} failed, "
                f"{self.skipped} skipped")
        if self.failed and self.last_error:
            text += f" (last error: {self.last_error})"
        return text


class Replayer:
    def __init__(self, settings: DestinationSettings, sender: Sender, *, attempts: int = 3,
                 ledger: Ledger | None = None, on_progress: Callable[[int], None] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random) -> None:
        self.settings = settings
        self.sender = sender
        self.attempts = max(1, attempts)
        self.ledger = ledger
        self.route = Route.of(settings.name, settings.sources, settings.consent_categories)
        self._progress = on_progress or (lambda n: None)
        self._sleep = sleep
        self._clock = clock
        self._rand = rand

    async def run(self, items: Iterable[Item]) -> Summary:
        """Send every item; never raises for a delivery failure (it is counted)."""
        summary = Summary(self.settings.name)
        batch: list[tuple[Item, bytes]] = []
        for item in items:
            message = rewrite(item.body, self.settings.name)
            why = "not a JSON object" if message is None else refusal(message, item.source,
                                                                       self.route)
            if message is None or why is not None:
                summary.skipped += 1
                self._progress(1)
                continue
            batch.append((item, _encode(message)))
            if len(batch) >= self.settings.batch_size:
                await self._send(batch, summary)
                batch = []
        if batch:
            await self._send(batch, summary)
        return summary

    async def _send(self, batch: list[tuple[Item, bytes]], summary: Summary) -> None:
        ids = [item.ledger_id for item, _ in batch if item.ledger_id is not None]
        error = DeliveryError("not sent")
        for attempt in range(1, self.attempts + 1):
            try:
                status = await self.sender.send([body for _, body in batch])
            except DeliveryError as exc:
                error = exc
                if isinstance(exc, PermanentDeliveryError) or attempt == self.attempts:
                    break
                await self._sleep(retry_delay(attempt, exc.retry_after,
                                              self.settings.backoff_min,
                                              self.settings.backoff_max, self._rand()))
                continue
            summary.delivered += len(batch)
            if ids and self.ledger is not None:
                await asyncio.to_thread(self.ledger.replayed, ids, status, self._clock())
            self._progress(len(batch))
            return
        summary.failed += len(batch)
        summary.last_error = str(error)
        if ids and self.ledger is not None:
            await asyncio.to_thread(self.ledger.replay_failed, ids, error.status, str(error),
                                    self._clock())
        self._progress(len(batch))
