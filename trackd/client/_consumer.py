"""The background half of a client in one process: a buffer and the thread that empties it."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from trackd.client import _lifecycle
from trackd.client._buffer import Buffer
from trackd.client._errors import ClientClosedError
from trackd.client._sender import Outcome, Sender
from trackd.client._types import Item, OnError
from trackd.messages import limits

_log = logging.getLogger("trackd.client")


def report(items: Sequence[Item], outcome: Outcome, on_error: OnError | None) -> None:
    """Tell the user how `items` ended, then return; never raises.

    `on_error(error, batch)` is called once for the messages that share the batch's error, and
    once for each message the server refused one by one (`RejectedError`, a batch of one).
    Then each message's `callback(error, message)` runs, with None for a delivered message.
    An exception from a user callback is logged and swallowed.
    """
    errors = [outcome.rejected.get(index, outcome.error) for index in range(len(items))]
    if on_error is not None:
        shared = [item.message for i, item in enumerate(items) if i not in outcome.rejected]
        if outcome.error is not None and shared:
            _call(on_error, outcome.error, shared)
        for index in sorted(outcome.rejected):
            if index < len(items):
                _call(on_error, outcome.rejected[index], [items[index].message])
    for item, error in zip(items, errors, strict=True):
        if item.callback is not None:
            _call(item.callback, error, item.message)


def _call(function: Callable[[Any, Any], object], *args: Any) -> None:
    try:
        function(*args)
    except Exception:
        _log.exception("a trackd.client callback raised")


class Consumer:
    """One daemon thread that sends what the buffer holds, batch after batch, in order.

    A batch holds at most `flush_at` messages and stays under 500 KB encoded (the server's
    limit); it leaves when full or `flush_interval` seconds after its first message was taken.
    Each batch is reported (see `report`) before it counts as done, so `flush()` returns after
    the callbacks ran. The consumer belongs to the process that made it (`pid`).
    """

    def __init__(
        self,
        sender: Sender,
        *,
        capacity: int,
        flush_at: int,
        flush_interval: float,
        on_error: OnError | None,
        exit_timeout: float | None,
    ) -> None:
        self.pid = os.getpid()
        self.buffer = Buffer(capacity)
        self.exit_timeout = exit_timeout
        self._sender = sender
        self._flush_at = flush_at
        self._flush_interval = flush_interval
        self._on_error = on_error
        # Stay strictly below the server's limit: it refuses bodies over MAX_BATCH_BYTES.
        self._max_bytes = limits.MAX_BATCH_BYTES - 1 - sender.endpoint.envelope_bytes()
        self._thread = threading.Thread(target=self._run, name="trackd-client", daemon=True)

    def start(self) -> None:
        """Start the thread; from now on the interpreter's exit delivers what is queued."""
        _lifecycle.running(self)
        self._thread.start()

    def close(self) -> None:
        """Let the thread finish what is queued and end; returns at once."""
        self.buffer.close()

    def stop(self, timeout: float | None = None) -> bool:
        """Deliver what is queued and end the thread; True when it all finished within `timeout`.

        When `timeout` runs out, retry waits are cut short, what is still queued is reported
        with `ClientClosedError`, and the call waits at most one more request timeout for
        the request in flight. Called from the consumer's own thread (a callback), it only
        closes the buffer and returns False.
        """
        self.buffer.close()
        if self.is_own_thread():  # called from a callback: it cannot wait for itself
            return False
        self._thread.join(timeout)
        if not self._thread.is_alive():
            return True
        self._sender.stop()
        dropped = self.buffer.discard()
        _log.warning("stopping with %d messages undelivered", len(dropped))
        closed = ClientClosedError("client stopped before sending the message")
        report(dropped, Outcome(closed), self._on_error)
        self._thread.join(self._sender.endpoint.timeout + 1.0)
        return False

    def is_own_thread(self) -> bool:
        """True when called from this consumer's thread, i.e. from `on_error` or a callback."""
        return threading.current_thread() is self._thread

    def _run(self) -> None:
        try:
            while True:
                batch = self.buffer.take(self._flush_at, self._max_bytes, self._flush_interval)
                if not batch:
                    return
                try:
                    report(batch, self._sender.deliver(batch), self._on_error)
                finally:
                    self.buffer.done(len(batch))
        finally:
            _lifecycle.stopped(self)
