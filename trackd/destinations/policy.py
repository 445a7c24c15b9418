"""Delivery policy as tiny pure functions: what a status means and when to try again.

- `classify(status)`: 2xx OK; 408, 429, 5xx and network errors (`None`) RETRY; other codes
  (the remaining 4xx, and 1xx/3xx, which a POST should never end with) ABORT.
- `next_attempt_after(attempt, lo, hi, rand)`: capped exponential backoff with +-20 % jitter.
- `parse_retry_after(value, now)`: the seconds a `Retry-After` header asks for (seconds or an
  HTTP-date), or None when there is none or it does not parse.
- `after_failure(...)`: the state of a message after a failed attempt: retrying with its next
  try, or dead once it is out of attempts or too old.

No I/O, no clock, no randomness of their own: callers pass `now` and `rand`, so tests are tables.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

JITTER = 0.2
"""Each delay is spread over [1 - JITTER, 1 + JITTER] times its nominal value."""

RETRY_AFTER_CAP = 300.0
"""The longest wait a Retry-After can impose when backoff_max is shorter (as Segment's SDKs)."""


class Verdict(enum.Enum):
    OK = "ok"
    RETRY = "retry"
    ABORT = "abort"


class State(enum.StrEnum):
    """Where a message stands with one destination; `terminal` states never change again
    (except a dead letter that a replay delivers)."""

    PENDING = "pending"
    RETRYING = "retrying"
    DELIVERED = "delivered"
    DEAD = "dead"
    SKIPPED = "skipped"

    @property
    def terminal(self) -> bool:
        return self in (State.DELIVERED, State.DEAD, State.SKIPPED)


def classify(status: int | None) -> Verdict:
    """`None` stands for a network error or a timeout (no status at all)."""
    if status is None:
        return Verdict.RETRY
    if 200 <= status < 300:
        return Verdict.OK
    if status in (408, 429) or 500 <= status < 600:
        return Verdict.RETRY
    return Verdict.ABORT


def next_attempt_after(attempt: int, lo: float, hi: float, rand: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (1 for the first failure).

    `lo * 2**(attempt-1)`, capped at `hi`, then jittered by `rand` in [0, 1): 0.5 gives the
    nominal delay. The result never exceeds `hi` and is never below `lo * (1 - JITTER)`.
    """
    exponent = min(max(attempt - 1, 0), 62)
    nominal = min(hi, lo * math.pow(2.0, exponent))
    return min(hi, nominal * (1.0 - JITTER + 2.0 * JITTER * rand))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds asked for by a Retry-After header: delta-seconds or an HTTP-date (RFC 9110)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return max(0.0, moment.timestamp() - now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True, slots=True)
class Limits:
    """The retry limits of one destination (from its settings)."""

    max_attempts: int
    max_age: float
    backoff_min: float
    backoff_max: float


@dataclass(frozen=True, slots=True)
class Decision:
    state: State
    next_try: float  # epoch seconds; 0 when dead


def after_failure(*, attempts: int, verdict: Verdict, age: float, now: float,
                  retry_after: float | None, limits: Limits, rand: float) -> Decision:
    """The state after failed attempt number `attempts` of a message `age` seconds old.

    ABORT is dead at once. RETRY waits for Retry-After when the destination sent one (capped
    at max(backoff_max, RETRY_AFTER_CAP)), else for the backoff; it is dead instead when this
    was the last attempt, or when the message is already older than max_age.
    """
    if verdict is Verdict.ABORT or attempts >= limits.max_attempts or age >= limits.max_age:
        return Decision(State.DEAD, 0.0)
    delay = retry_delay(attempts, retry_after, limits.backoff_min, limits.backoff_max, rand)
    return Decision(State.RETRYING, now + delay)


def retry_delay(attempt: int, retry_after: float | None, lo: float, hi: float,
                rand: float) -> float:
    """Seconds before the next try: the destination's Retry-After when it sent one (capped
    at max(hi, RETRY_AFTER_CAP)), else the jittered backoff."""
    if retry_after is not None:
        return min(retry_after, max(hi, RETRY_AFTER_CAP))
    return next_attempt_after(attempt, lo, hi, rand)
