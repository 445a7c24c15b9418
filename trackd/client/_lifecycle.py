"""Process-wide hooks: deliver what is queued at interpreter exit, and start clean after fork.

At exit (atexit), every running consumer of this process is stopped in turn, each given its
client's `exit_timeout` to deliver what it holds; calls made after that are reported with
`ClientClosedError`. In a child made by `os.fork`, nothing of the parent's consumers is used:
every client drops its consumer (whose locks another thread may have held at the fork) and
makes a fresh one, with an empty queue and its own thread, on its next call. So the child never
re-sends what the parent had queued.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from trackd.client._consumer import Consumer


class _Forkable(Protocol):
    def _after_fork(self) -> None: ...


_lock = threading.Lock()
_running: set[Consumer] = set()
_clients: weakref.WeakSet[_Forkable] = weakref.WeakSet()
_exited = False


def running(consumer: Consumer) -> None:
    """Register a consumer whose thread starts now, so the exit hook can stop it."""
    with _lock:
        _running.add(consumer)


def stopped(consumer: Consumer) -> None:
    """Forget a consumer whose thread has ended."""
    with _lock:
        _running.discard(consumer)


def watch(client: _Forkable) -> None:
    """Call `client._after_fork()` in every forked child (held weakly)."""
    with _lock:
        _clients.add(client)


def exited() -> bool:
    """True once the exit hook has run: nothing queued from now on would be sent."""
    return _exited


def _at_exit() -> None:
    global _exited
    _exited = True
    pid = os.getpid()
    with _lock:
        consumers = [consumer for consumer in _running if consumer.pid == pid]
    for consumer in consumers:
        consumer.stop(consumer.exit_timeout)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    _running.clear()
    for client in list(_clients):
        client._after_fork()


atexit.register(_at_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)
