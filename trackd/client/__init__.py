"""trackd's Python client: a drop-in replacement for Segment's analytics-python.

    import trackd.client as analytics

    analytics.write_key = "YOUR_WRITE_KEY"
    analytics.host = "http://127.0.0.1:8088"
    analytics.track(user_id="user123", event="Product Purchased", properties={"price": 99.99})

The module-level functions act on one default `Client`, made on the first call from the
settings below as they are at that moment. `shutdown()` stops it and forgets it, so settings
changed afterwards apply to the next call. Importing this package imports nothing outside the
standard library (and `trackd.messages`, which is stdlib-only too).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Concatenate, ParamSpec, TypeVar

from trackd.client._client import Client
from trackd.client._errors import (
    APIError,
    ClientClosedError,
    ClientError,
    ConfigurationError,
    DeliveryError,
    NetworkError,
    QueueFullError,
    RejectedError,
    ValidationError,
)
from trackd.client._options import DEFAULT_HOST
from trackd.client._types import Callback, Message, OnError

__all__ = [
    "APIError",
    "Callback",
    "Client",
    "ClientClosedError",
    "ClientError",
    "ConfigurationError",
    "DeliveryError",
    "Message",
    "NetworkError",
    "OnError",
    "QueueFullError",
    "RejectedError",
    "ValidationError",
    "alias",
    "flush",
    "group",
    "identify",
    "join",
    "page",
    "screen",
    "shutdown",
    "track",
]

# Settings of the default client (analytics-python's names; see docs/client.md).
write_key: str | None = None
host: str = DEFAULT_HOST
on_error: OnError | None = None
debug: bool = False
log_handler: logging.Handler | None = None
send: bool = True
sync_mode: bool = False
max_queue_size: int = 10000
gzip: bool = False
timeout: float = 15.0
max_retries: int = 10
proxies: Mapping[str, str] | None = None
flush_at: int = 100
flush_interval: float = 0.5

default_client: Client | None = None
_lock = threading.Lock()

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _default() -> Client:
    global default_client
    with _lock:
        if default_client is None:
            if write_key is None:
                raise ConfigurationError("set trackd.client.write_key before the first call")
            default_client = Client(
                write_key,
                host=host,
                debug=debug,
                max_queue_size=max_queue_size,
                send=send,
                on_error=on_error,
                gzip=gzip,
                max_retries=max_retries,
                sync_mode=sync_mode,
                timeout=timeout,
                proxies=proxies,
                log_handler=log_handler,
                flush_at=flush_at,
                flush_interval=flush_interval,
            )
        return default_client


def _on_default(method: Callable[Concatenate[Client, _P], _R]) -> Callable[_P, _R]:
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        return method(_default(), *args, **kwargs)

    call.__name__ = call.__qualname__ = method.__name__
    call.__doc__ = f"`Client.{method.__name__}` on the default client.\n\n{method.__doc__}"
    return call


identify = _on_default(Client.identify)
track = _on_default(Client.track)
alias = _on_default(Client.alias)
group = _on_default(Client.group)
page = _on_default(Client.page)
screen = _on_default(Client.screen)


def flush(timeout: float | None = None) -> bool:
    """Send what the default client has queued and wait for it; see `Client.flush`."""
    client = default_client
    return True if client is None else client.flush(timeout)


def join(timeout: float | None = None) -> bool:
    """End the default client's thread once its queue is sent; see `Client.join`."""
    client = default_client
    return True if client is None else client.join(timeout)


def shutdown(timeout: float | None = None) -> bool:
    """Deliver what is queued, stop the default client and forget it; see `Client.shutdown`."""
    global default_client
    with _lock:
        client, default_client = default_client, None
    return True if client is None else client.shutdown(timeout)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
