"""The background half of a client in one process: a buffer and the thread that empties it."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

from trackd.client import _lifecycle
from trackd.client._buffer import Buffer
from trackd.client._errors import ClientClosedError, DeliveryError
from trackd.client._sender import Sender
from trackd.client._types import Item, OnError
from trackd.messages import limits

_log = logging.getLogger("trackd.client")


def report(items: Sequence[Item], error: DeliveryError | None, on_error: OnError | None) -> None:
    """Tell the user how `items` ended: `on_error(error, batch)` once, then each `callback`.

    Never raises: an exception from a user callback is logged and swallowed.
    """
    if not items:
        return
    if error is not None and on_error is not None:
        try:
            on_error(error, [item.message for item in items])
        except Exception:
            _log.exception("on_error raised")
    for item in items:
        if item.callback is not None:
            try:
                item.callback(error, item.message)
            except Exception:
                _log.exception("callback raised")


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
        the request in flight.
        """
        self.buffer.close()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            return True
        self._sender.stop()
        dropped = self.buffer.discard()
        _log.warning("stopping with %d messages undelivered", len(dropped))
        report(dropped, ClientClosedError("client stopped before sending the message"), self._on_error)
        self._thread.join(self._sender.endpoint.timeout + 1.0)
        return False

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
