"""`Client`: analytics-python's calls, validated like the server, delivered in the background."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from trackd.client import _lifecycle
from trackd.client._consumer import Consumer, report
from trackd.client._errors import (
    ClientClosedError,
    ConfigurationError,
    DeliveryError,
    QueueFullError,
)
from trackd.client._message import build
from trackd.client._request import Endpoint
from trackd.client._sender import Sender
from trackd.client._types import Callback, Message, OnError
from trackd.messages import limits

DEFAULT_HOST = "http://127.0.0.1:8088"
Id = str | int | float
Result = tuple[bool, Message]
_log = logging.getLogger("trackd.client")


class Client:
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
        if not isinstance(write_key, str) or not write_key:
            raise ConfigurationError("write_key must be a non-empty string")
        flush_at = _alias("flush_at", flush_at, "upload_size", upload_size, 100)
        flush_interval = _alias(
            "flush_interval", flush_interval, "upload_interval", upload_interval, 0.5
        )
        _check_range("max_queue_size", max_queue_size, 1, None, integer=True)
        _check_range("flush_at", flush_at, 1, limits.MAX_BATCH_ITEMS, integer=True)
        _check_range("max_retries", max_retries, 0, None, integer=True)
        for name, value in (
            ("flush_interval", flush_interval),
            ("backoff_base", backoff_base),
            ("backoff_max", backoff_max),
        ):
            _check_range(name, value, 0, None)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigurationError(f"timeout must be a number of seconds above 0, got {timeout!r}")
        if exit_timeout is not None:
            _check_range("exit_timeout", exit_timeout, 0, None)
        if thread != 1:
            raise ConfigurationError("thread must be 1: one consumer thread keeps messages in order")
        if on_error is not None and not callable(on_error):
            raise ConfigurationError("on_error must be callable: on_error(error, batch)")

        self.write_key = write_key
        self.host = host
        self.on_error = on_error
        self.send = send
        self.sync_mode = sync_mode
        self.max_queue_size = max_queue_size
        self.flush_at = flush_at
        self.flush_interval = flush_interval
        self.exit_timeout = exit_timeout
        self._endpoint = Endpoint(host, write_key, gzip=gzip, timeout=timeout, proxies=proxies)
        self._retry = {"max_retries": max_retries, "backoff_base": backoff_base}
        self._retry["backoff_max"] = backoff_max
        self._sync_sender = self._new_sender()
        self._lock = threading.Lock()
        self._consumer: Consumer | None = None
        _configure_logging(debug, log_handler)
        _lifecycle.watch(self)

    def identify(
        self,
        user_id: Id | None = None,
        traits: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        anonymous_id: Id | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        *,
        callback: Callback | None = None,
    ) -> Result:
        """Record who the user is. Returns `(queued, message)`; see the class guarantees."""
        fields = {"userId": user_id, "anonymousId": anonymous_id, "traits": traits or {}}
        return self._call("identify", fields, context, timestamp, integrations, message_id, callback)

    def track(
        self,
        user_id: Id | None = None,
        event: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        anonymous_id: Id | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        *,
        callback: Callback | None = None,
    ) -> Result:
        """Record an action the user took. Returns `(queued, message)`."""
        fields = {"userId": user_id, "anonymousId": anonymous_id, "event": event}
        fields["properties"] = properties or {}
        return self._call("track", fields, context, timestamp, integrations, message_id, callback)

    def alias(
        self,
        previous_id: Id | None = None,
        user_id: Id | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        *,
        callback: Callback | None = None,
    ) -> Result:
        """Merge `previous_id` into `user_id`. Returns `(queued, message)`."""
        fields = {"previousId": previous_id, "userId": user_id}
        return self._call("alias", fields, context, timestamp, integrations, message_id, callback)

    def group(
        self,
        user_id: Id | None = None,
        group_id: Id | None = None,
        traits: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        anonymous_id: Id | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        *,
        callback: Callback | None = None,
    ) -> Result:
        """Put the user in a group (company, team...). Returns `(queued, message)`."""
        fields = {"userId": user_id, "anonymousId": anonymous_id, "groupId": group_id}
        fields["traits"] = traits or {}
        return self._call("group", fields, context, timestamp, integrations, message_id, callback)

    def page(
        self,
        user_id: Id | None = None,
        category: str | None = None,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        anonymous_id: Id | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        *,
        callback: Callback | None = None,
    ) -> Result:
        """Record a web page view. Returns `(queued, message)`."""
        fields = {"userId": user_id, "anonymousId": anonymous_id, "category": category}
        fields.update(name=name, properties=properties or {})
        return self._call("page", fields, context, timestamp, integrations, message_id, callback)

    def screen(
        self,
        user_id: Id | None = None,
        category: str | None = None,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        anonymous_id: Id | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        *,
        callback: Callback | None = None,
    ) -> Result:
        """Record an app screen view. Returns `(queued, message)`."""
        fields = {"userId": user_id, "anonymousId": anonymous_id, "category": category}
        fields.update(name=name, properties=properties or {})
        return self._call("screen", fields, context, timestamp, integrations, message_id, callback)

    def flush(self, timeout: float | None = None) -> bool:
        """Send what is queued now and wait until all of it is delivered or reported.

        True when that happened within `timeout` seconds (None: wait as long as it takes,
        which includes retries and Retry-After waits).
        """
        consumer = self._consumer
        if consumer is None or consumer.pid != os.getpid():
            return True
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
        """`flush()` then `join()`, within one `timeout`; True if everything was delivered."""
        return self.join(timeout)

    def _call(
        self,
        kind: str,
        fields: dict[str, Any],
        context: Mapping[str, Any] | None,
        timestamp: datetime | str | None,
        integrations: Mapping[str, Any] | None,
        message_id: str | None,
        callback: Callback | None,
    ) -> Result:
        fields.update(context=context, timestamp=timestamp, integrations=integrations)
        fields["messageId"] = message_id
        item = build(kind, fields, callback)
        if not self.send:
            return True, item.message
        if self.sync_mode:
            error = self._sync_sender.deliver([item])
            report([item], error, self.on_error)
            return error is None, item.message
        failure: DeliveryError | None = None
        with self._lock:
            if _lifecycle.exited():
                failure = ClientClosedError("called after the interpreter's exit flush")
            elif not self._running_consumer().buffer.put(item):
                failure = QueueFullError(f"queue full ({self.max_queue_size} messages waiting)")
        if failure is not None:
            _log.warning("%s message dropped: %s", kind, failure)
            report([item], failure, self.on_error)
            return False, item.message
        return True, item.message

    def _running_consumer(self) -> Consumer:
        """This process's consumer, started on first use (and anew after fork or join)."""
        consumer = self._consumer
        if consumer is None or consumer.pid != os.getpid():
            consumer = Consumer(
                self._new_sender(),
                capacity=self.max_queue_size,
                flush_at=self.flush_at,
                flush_interval=self.flush_interval,
                on_error=self.on_error,
                exit_timeout=self.exit_timeout,
            )
            consumer.start()
            # A client dropped without shutdown lets its thread finish the queue and end.
            weakref.finalize(self, consumer.close).atexit = False
            self._consumer = consumer
        return consumer

    def _new_sender(self) -> Sender:
        return Sender(self._endpoint, **self._retry)  # type: ignore[arg-type]

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._consumer = None


def _alias(name: str, value: Any, old_name: str, old_value: Any, default: Any) -> Any:
    if old_value is None:
        return value
    if value != default and value != old_value:
        raise ConfigurationError(f"{old_name} is another name for {name}; give one of them")
    return old_value


def _check_range(
    name: str, value: object, low: float, high: float | None, *, integer: bool = False
) -> None:
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool)
    if ok and (value < low or (high is not None and value > high)):  # type: ignore[operator]
        ok = False
    if not ok:
        span = f"{low}..{high}" if high is not None else f">= {low}"
        kind = "an integer" if integer else "a number"
        raise ConfigurationError(f"{name} must be {kind} {span}, got {value!r}")


def _configure_logging(debug: bool, handler: logging.Handler | None) -> None:
    if handler is not None and handler not in _log.handlers:
        _log.addHandler(handler)
    if debug:
        _log.setLevel(logging.DEBUG)
        if not _log.handlers:
            _log.addHandler(logging.StreamHandler())
