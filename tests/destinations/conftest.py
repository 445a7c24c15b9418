"""Fixtures: real HTTP receivers, a real log with a loop thread, and worker factories."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.destinations.harness import LogHarness
from tests.destinations.receiver import Receiver
from trackd.destinations import ledger_dir
from trackd.destinations.ledger import Ledger, ledger_path
from trackd.destinations.senders import build_sender
from trackd.destinations.worker import DestinationWorker
from trackd.settings import DestinationSettings

QUICK = {"backoff_min": 0.02, "backoff_max": 0.1, "linger": 0.05, "poll_interval": 0.02,
         "timeout": 5.0}


@pytest.fixture
def make_receiver() -> Iterator[Callable[[], Receiver]]:
    receivers: list[Receiver] = []

    def factory() -> Receiver:
        receiver = Receiver().start()
        receivers.append(receiver)
        return receiver

    yield factory
    for receiver in receivers:
        receiver.stop()


@pytest.fixture
def receiver(make_receiver: Callable[[], Receiver]) -> Receiver:
    return make_receiver()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[LogHarness]:
    h = LogHarness(tmp_path)
    yield h
    h.close()


def destination(name: str = "hook", url: str = "", **overrides: Any) -> DestinationSettings:
    """Destination settings with quick backoffs for tests."""
    return DestinationSettings(name=name, url=url, **{**QUICK, **overrides})


@pytest.fixture
def make_worker(harness: LogHarness) -> Callable[..., DestinationWorker]:
    """make_worker(settings) -> a started DestinationWorker on the harness log."""

    def factory(settings: DestinationSettings, *, start: bool = True,
                **kw: Any) -> DestinationWorker:
        ledger = Ledger(ledger_path(ledger_dir(harness.root), settings.name))
        worker = DestinationWorker(settings, harness.reader, ledger, build_sender(settings),
                                   harness.metrics, **kw)
        if start:
            harness.start(worker)
        return worker

    return factory
