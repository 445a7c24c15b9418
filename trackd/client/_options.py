"""A client's settings, checked once when the client is made."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from trackd.client._errors import ConfigurationError
from trackd.client._types import OnError
from trackd.messages import limits

DEFAULT_HOST = "http://127.0.0.1:8088"
_T = TypeVar("_T", int, float)
_log = logging.getLogger("trackd.client")


@dataclass(frozen=True)
class Options:
    """Every setting of a `Client`; see docs/client.md for each. Invalid values raise
    `ConfigurationError` here, so a client that exists is a usable one."""

    write_key: str
    host: str = DEFAULT_HOST
    max_queue_size: int = 10000
    send: bool = True
    on_error: OnError | None = None
    gzip: bool = False
    max_retries: int = 10
    sync_mode: bool = False
    timeout: float = 15.0
    proxies: Mapping[str, str] | None = None
    flush_at: int = 100
    flush_interval: float = 0.5
    backoff_base: float = 0.5
    backoff_max: float = 60.0
    exit_timeout: float | None = 10.0

    def __post_init__(self) -> None:
        if not isinstance(self.write_key, str) or not self.write_key:
            raise ConfigurationError("write_key must be a non-empty string")
        _check("max_queue_size", self.max_queue_size, 1, integer=True)
        _check("flush_at", self.flush_at, 1, limits.MAX_BATCH_ITEMS, integer=True)
        _check("max_retries", self.max_retries, 0, integer=True)
        _check("flush_interval", self.flush_interval, 0)
        _check("backoff_base", self.backoff_base, 0)
        _check("backoff_max", self.backoff_max, 0)
        _check("timeout", self.timeout, 0.001)
        if self.exit_timeout is not None:
            _check("exit_timeout", self.exit_timeout, 0)
        if self.on_error is not None and not callable(self.on_error):
            raise ConfigurationError("on_error must be callable: on_error(error, batch)")


def alias(name: str, value: _T, old_name: str, old_value: _T | None, default: _T) -> _T:
    """Resolve analytics-python's name (`old_name`) for a setting against trackd's (`name`)."""
    if old_value is None:
        return value
    if value not in (default, old_value):
        raise ConfigurationError(f"{old_name} is another name for {name}; give only one")
    return old_value


def configure_logging(debug: bool, handler: logging.Handler | None) -> None:
    """analytics-python's switches: `log_handler` is added to the `trackd.client` logger;
    `debug` sets it to DEBUG and, if it has no handler, adds one writing to stderr."""
    if handler is not None and handler not in _log.handlers:
        _log.addHandler(handler)
    if debug:
        _log.setLevel(logging.DEBUG)
        if not _log.handlers:
            _log.addHandler(logging.StreamHandler())


def _check(
    name: str, value: object, low: float, high: float | None = None, *, integer: bool = False
) -> None:
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if (
        number is None
        or (integer and not isinstance(number, int))
        or number < low
        or (high is not None and number > high)
    ):
        span = f"between {low} and {high}" if high is not None else f"at least {low}"
        kind = "an integer" if integer else "a number"
        raise ConfigurationError(f"{name} must be {kind} {span}, got {value!r}")
