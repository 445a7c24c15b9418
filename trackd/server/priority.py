"""Scheduling priority for CPU-heavy background threads of the supervisor process.

The pipeline stages (the warehouse loader above all) share the machine's cores with the
gateway workers. Under load they should yield: ingest answers clients waiting on a 200, a
stage only catches up later. On Linux every thread has its own nice value, so a stage's
thread can lower its own priority without touching the rest of the process.
"""

from __future__ import annotations

import os
import sys
import threading

STAGE_NICE = 10
"""How much lower than the process a CPU-heavy stage thread runs (added to its niceness)."""


def lower_thread_priority(nice: int = STAGE_NICE) -> bool:
    """Add `nice` to the calling thread's niceness, as `os.nice` does for a process.

    Call it first thing in the thread's target. Relative rather than absolute, so the thread
    stays below the gateway workers even when trackd as a whole already runs niced; capped at
    19. Only on Linux: elsewhere `setpriority(PRIO_PROCESS, id)` takes a process id, and a
    thread id could name another process. Returns whether the priority was lowered; an
    OSError (e.g. a sandbox forbidding it) is ignored, since it costs only scheduling order.
    """
    if sys.platform != "linux" or nice <= 0:
        return False
    thread = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(current + nice, 19))
    except OSError:
        return False
    return True
