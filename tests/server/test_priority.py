"""A stage thread lowers its own priority, and only its own."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from trackd.server.priority import lower_thread_priority

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice is Linux's")


def _in_thread(nice: int) -> tuple[bool, int, int]:
    seen: list[tuple[bool, int, int]] = []

    def target() -> None:
        thread = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, thread)
        lowered = lower_thread_priority(nice)
        seen.append((lowered, before, os.getpriority(os.PRIO_PROCESS, thread)))

    worker = threading.Thread(target=target)
    worker.start()
    worker.join()
    return seen[0]


def test_the_calling_thread_runs_lower_and_the_process_does_not() -> None:
    process_before = os.getpriority(os.PRIO_PROCESS, 0)
    lowered, before, after = _in_thread(5)
    assert lowered
    assert after == min(before + 5, 19)
    assert os.getpriority(os.PRIO_PROCESS, 0) == process_before


def test_capped_at_19() -> None:
    lowered, _before, after = _in_thread(100)
    assert lowered and after == 19


def test_zero_changes_nothing() -> None:
    lowered, before, after = _in_thread(0)
    assert not lowered and after == before
