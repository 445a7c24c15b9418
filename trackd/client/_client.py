"""`Client`: analytics-python's calls, validated like the server, delivered in the background."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from trackd.client import _lifecycle
from trackd.client._calls import Calls, Result
from trackd.client._consumer import Consumer, report
from trackd.client._errors import (
    ClientClosedError,
    ConfigurationError,
    DeliveryError,
    QueueFullError,
)
from trackd.client._message import build
from trackd.client._options import DEFAULT_HOST, Options, alias, configure_logging
from trackd.client._request import Endpoint
from trackd.client._sender import Outcome, Sender
from trackd.client._types import Callback, OnError

_log = logging.getLogger("trackd.client")


class Client(Calls):
    """A drop-in replacement for `segment.analytics.Client` that talks to trackd.

    The first fifteen parameters are analytics-python 2.4.0's, in its order (`upload_size`
    and `upload_interval` are its names for `flush_at` and `flush_interval`); the rest are
    keyword-only. Guarantees:

    - A call (`track`, `identify`, ...) raises only `ValidationError`, for a message the server
      would refuse, with the server's exact reason; nothing about the network ever raises.
    - A call never blocks on the network, except in `sync_mode`. When `max_queue_size` messages
      are waiting, the call drops its message, returns `(False, message)` and reports
      `QueueFullError`.
    - Every accepted message is either delivered (a 2xx for its batch) or reported exactly
      once: `on_error(error, batch)` per batch and `callback(error, message)` per message.
    - Messages leave in call order, in batches of at most `flush_at` messages under 500 KB.
    """

    def __init__(
        self,
        write_key: str,
        host: str = DEFAULT_HOST,
        debug: bool = False,
        max_queue_size: int = 10000,
        send: bool = True,
        on_error: OnError | None = None,
        gzip: bool = False,
        max_retries: int = 10,
        sync_mode: bool = False,
        timeout: float = 15.0,
        proxies: Mapping[str, str] | None = None,
        thread: int = 1,
        upload_size: int | None = None,
        upload_interval: float | None = None,
        log_handler: logging.Handler | None = None,
        *,
        flush_at: int = 100,
        flush_interval: float = 0.5,
        backoff_base: float = 0.5,
        backoff_max: float = 60.0,
        exit_timeout: float | None = 10.0,
    ) -> None:
        if thread != 1:
            raise ConfigurationError("thread must be 1: one consumer keeps messages in order")
        self.options = options = Options(
            write_key,
            host,
            max_queue_size,
            send,
            on_error,
            gzip,
            max_retries,
            sync_mode,
            timeout,
            proxies,
            flush_at=alias("flush_at", flush_at, "upload_size", upload_size, 100),
            flush_interval=alias(
                "flush_interval", flush_interval, "upload_interval", upload_interval, 0.5
            ),
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            exit_timeout=exit_timeout,
        )
        self._endpoint = Endpoint(
            options.host,
            options.write_key,
            gzip=options.gzip,
            timeout=options.timeout,
            proxies=options.proxies,
        )
        self._sync_sender = self._new_sender()
        self._lock = threading.Lock()
        self._consumer: Consumer | None = None
        configure_logging(debug, log_handler)
        _lifecycle.watch(self)

    def flush(self, timeout: float | None = None) -> bool:
        """Send what is queued now and wait until all of it is delivered or reported.

        True when that happened within `timeout` seconds (None: wait as long as it takes,
        which includes retries and Retry-After waits). From inside `on_error` or a callback
        it returns False at once instead of waiting for itself.
        """
        consumer = self._consumer
        if consumer is None or consumer.pid != os.getpid():
            return True
        if consumer.is_own_thread():  # from on_error or a callback: waiting would deadlock
            return False
        return consumer.buffer.wait_drained(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Deliver what is queued, then end the background thread; True if done within `timeout`.

        After `timeout`, what is left is reported with `ClientClosedError`. The client stays
        usable: a later call starts a new thread.
        """
        with self._lock:
            consumer, self._consumer = self._consumer, None
        if consumer is None or consumer.pid != os.getpid():
            return True
        return consumer.stop(timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """`flush()` then `join()`, within one `timeout`. True when nothing is left: each
        message was delivered or reported to `on_error` (a refused or undeliverable one is
        reported, not retried forever); False when `timeout` ran out first."""
        return self.join(timeout)

    def _call(self, kind: str, callback: Callback | None, **fields: Any) -> Result:
        item = build(kind, fields, callback)
        options = self.options
        if not options.send:
            return True, item.message
        if options.sync_mode:
            outcome = self._sync_sender.deliver([item])
            report([item], outcome, options.on_error)
            return outcome.error is None and not outcome.rejected, item.message
        failure: DeliveryError | None = None
        with self._lock:
            if _lifecycle.exited():
                failure = ClientClosedError("called after the interpreter's exit flush")
            elif not self._running_consumer().buffer.put(item):
                waiting = options.max_queue_size
                failure = QueueFullError(f"queue full: {waiting} messages are waiting to be sent")
        if failure is not None:
            _log.warning("%s message dropped: %s", kind, failure)
            report([item], Outcome(failure), options.on_error)
            return False, item.message
        return True, item.message

    def _running_consumer(self) -> Consumer:
        """This process's consumer, started on first use (and anew after fork or join)."""
        consumer = self._consumer
        if consumer is None or consumer.pid != os.getpid():
            options = self.options
            consumer = Consumer(
                self._new_sender(),
                capacity=options.max_queue_size,
                flush_at=options.flush_at,
                flush_interval=options.flush_interval,
                on_error=options.on_error,
                exit_timeout=options.exit_timeout,
            )
            consumer.start()
            # A client dropped without shutdown lets its thread finish the queue and end.
            weakref.finalize(self, consumer.close).atexit = False
            self._consumer = consumer
        return consumer

    def _new_sender(self) -> Sender:
        options = self.options
        return Sender(
            self._endpoint,
            max_retries=options.max_retries,
            backoff_base=options.backoff_base,
            backoff_max=options.backoff_max,
        )

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._consumer = None
