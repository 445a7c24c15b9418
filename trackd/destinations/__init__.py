"""Destinations: processed log -> webhooks and Segment-compatible APIs (the router stage).

Modules: `policy` (classify, backoff, Retry-After: pure), `routing` (sources, consent,
integrations: pure), `senders` (the HTTP seam), `ledger` (durable queue, history, dead letters),
`worker` (one log consumer per destination), `lookup` ("where is my event"), `replay`.

The composition root calls `build_destinations`; offline commands call `open_lookup`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from trackd.destinations.ledger import Ledger, ledger_path
from trackd.destinations.lookup import DeliveryLookup
from trackd.destinations.senders import build_sender
from trackd.destinations.worker import DestinationWorker, consumer_name
from trackd.log.choice import reader_of
from trackd.log.protocol import LogSource
from trackd.log.reader import LogReader
from trackd.observability import Registry
from trackd.settings import Settings
from trackd.types import Lookup, Stage

if TYPE_CHECKING:
    import httpx


def ledger_dir(data_dir: Path) -> Path:
    return data_dir / "destinations"


def build_destinations(settings: Settings, log: LogReader | LogSource, metrics: Registry,
                       data_dir: Path, *, transport: httpx.AsyncBaseTransport | None = None
                       ) -> tuple[list[Stage], Lookup]:
    """One worker stage per configured destination, and their shared lookup.

    A destination seen for the first time starts at the end of the log (it receives what
    arrives from now on; `trackd replay` sends it the past) and is registered as a consumer
    at once, so trimming waits for it from here on (on the NATS log, when its stage starts).
    """
    reader = reader_of(log)
    known = set(reader.consumers()) if reader is not None else set()
    stages: list[Stage] = []
    ledgers: dict[str, Ledger] = {}
    for dest in settings.destinations:
        consumer = consumer_name(dest.name)
        if reader is not None and consumer not in known:
            heads = {shard: offset for shard, offset in reader.heads().items() if offset}
            if heads:
                reader.commit(consumer, heads)
            reader.register(consumer)
        ledger = Ledger(ledger_path(ledger_dir(data_dir), dest.name))
        ledgers[dest.name] = ledger
        stages.append(DestinationWorker(dest, log, ledger, build_sender(dest, transport),
                                        metrics, start_at="new"))
    return stages, DeliveryLookup(ledgers, reader)


def open_lookup(settings: Settings, reader: LogReader | None, data_dir: Path) -> DeliveryLookup:
    """The lookup over existing ledgers, read-only: for commands run without a server."""
    ledgers: dict[str, Ledger] = {}
    for dest in settings.destinations:
        path = ledger_path(ledger_dir(data_dir), dest.name)
        if path.exists():
            ledgers[dest.name] = Ledger(path, readonly=True)
    return DeliveryLookup(ledgers, reader)


__all__ = ["build_destinations", "ledger_dir", "open_lookup"]
