""""Where is my event", per destination, from the delivery ledgers.

`DeliveryLookup.lookup(messageId)` answers

    {"found": bool, "deliveries": [{"destination": "hook", "state": "delivered", ...}, ...]}

with one entry per destination (and source) that knows the message:
- pending: waiting for its first attempt (`queuedAt`), or still in the log, not yet read by
  the destination (`"in": "log"`);
- delivered: `deliveredAt`, `status`, `attempts` (and `replayed` when a replay delivered it);
- retrying: `attempts`, `nextTry`, the last `status` and `error`;
- dead: `attempts`, `deadAt`, the last `status` and `error` (why);
- skipped: `reason` (consent, integrations object, or source not routed there).
`found` is true when any ledger has the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from trackd.destinations.ledger import Ledger
from trackd.destinations.worker import consumer_name
from trackd.log.reader import LogReader
from trackd.messages.enrich import iso


def _when(epoch: float | None) -> str | None:
    return None if epoch is None else iso(datetime.fromtimestamp(epoch, UTC))


def describe(destination: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """One ledger row as the lookup shows it."""
    state = row["state"]
    out: dict[str, Any] = {"destination": destination, "source": row["source"],
                           "state": state}
    if state == "pending":
        out.update(attempts=row["attempts"], queuedAt=_when(row["enqueued_at"]))
    elif state == "delivered":
        out.update(deliveredAt=_when(row["done_at"]), status=row["status"],
                   attempts=row["attempts"])
        if row["replayed"]:
            out["replayed"] = True
    elif state == "retrying":
        out.update(attempts=row["attempts"], nextTry=_when(row["next_try"]),
                   status=row["status"], error=row["error"])
    elif state == "dead":
        out.update(attempts=row["attempts"], deadAt=_when(row["done_at"]),
                   status=row["status"], error=row["error"])
    else:
        out["reason"] = row["error"]
    return out


class DeliveryLookup:
    """The destinations' part of "where is my event" (a `trackd.types.Lookup`)."""

    def __init__(self, ledgers: Mapping[str, Ledger], reader: LogReader | None = None) -> None:
        self.ledgers = dict(ledgers)
        self.reader = reader

    def lookup(self, message_id: str) -> dict[str, Any]:
        deliveries: list[dict[str, Any]] = []
        unknown: list[str] = []
        for name, ledger in self.ledgers.items():
            rows = ledger.find(message_id)
            deliveries.extend(describe(name, row) for row in rows)
            if not rows:
                unknown.append(name)
        found = bool(deliveries)
        if unknown and self.reader is not None:
            records = self.reader.find(message_id)
            registered = set(self.reader.consumers()) if records else set()
            for name in unknown:
                if consumer_name(name) not in registered:
                    continue  # never started: it will begin at the end of the log
                position = self.reader.position(consumer_name(name))
                for record in records:
                    if record.offset > position.get(record.shard, 0):
                        deliveries.append({"destination": name, "source": record.source,
                                           "state": "pending", "attempts": 0, "in": "log"})
        return {"found": found, "deliveries": deliveries}

    def close(self) -> None:
        for ledger in self.ledgers.values():
            ledger.close()
