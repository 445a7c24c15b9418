"""Retry policy as pure functions: what to retry, and how long to wait first."""

from __future__ import annotations

import math
from datetime import UTC
from email.utils import parsedate_to_datetime

from trackd.client._errors import APIError, DeliveryError, NetworkError

RETRY_AFTER_MAX = 300.0
"""Longest Retry-After honoured, in seconds; a longer one is cut to this."""


def is_retryable(error: DeliveryError) -> bool:
    """True for no answer at all, 408, 429 and every 5xx; False for everything else.

    Other 4xx (400 bad message, 401 bad key, 413 too large) and 3xx will fail the same way
    again, so retrying them only delays the report.
    """
    if isinstance(error, NetworkError):
        return True
    if isinstance(error, APIError):
        return error.status in (408, 429) or 500 <= error.status <= 599
    return False


def parse_retry_after(header: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After value, capped at RETRY_AFTER_MAX; None if unusable.

    Accepts delay-seconds (`120`, also a decimal) and an HTTP-date
    (`Wed, 21 Oct 2026 07:28:00 GMT`), judged against `now` (a `time.time()` reading).
    A date in the past means "now": 0.
    """
    if header is None:
        return None
    text = header.strip()
    if not text:
        return None
    try:
        seconds: float | None = float(text)
    except ValueError:
        seconds = _seconds_until(text, now)
    if seconds is None or not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)


def _seconds_until(text: str, now: float) -> float | None:
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:  # "-0000": UTC with no claim about local time
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp() - now


def backoff_delay(retry: int, base: float, cap: float, rand: float) -> float:
    """Seconds before retry number `retry` (1 for the first): capped exponential with jitter.

    The un-jittered delay is `min(cap, base * 2 ** (retry - 1))`; `rand` in [0, 1) picks a
    point in its upper half, so clients that failed together do not retry together.
    """
    exponent = min(max(retry - 1, 0), 64)
    delay = min(cap, base * 2.0**exponent)
    return delay * (0.5 + rand / 2)
