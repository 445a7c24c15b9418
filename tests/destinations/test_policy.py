"""classify, backoff, Retry-After and the state after a failure: tables."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from trackd.destinations.policy import (
    JITTER,
    Limits,
    State,
    Verdict,
    after_failure,
    classify,
    next_attempt_after,
    parse_retry_after,
    retry_delay,
)


@pytest.mark.parametrize(("status", "verdict"), [
    (200, Verdict.OK), (201, Verdict.OK), (202, Verdict.OK), (204, Verdict.OK),
    (299, Verdict.OK),
    (408, Verdict.RETRY), (429, Verdict.RETRY), (500, Verdict.RETRY), (502, Verdict.RETRY),
    (503, Verdict.RETRY), (504, Verdict.RETRY), (599, Verdict.RETRY), (None, Verdict.RETRY),
    (400, Verdict.ABORT), (401, Verdict.ABORT), (403, Verdict.ABORT), (404, Verdict.ABORT),
    (409, Verdict.ABORT), (413, Verdict.ABORT), (422, Verdict.ABORT),
    (301, Verdict.ABORT), (304, Verdict.ABORT), (100, Verdict.ABORT),
    (300, Verdict.ABORT), (600, Verdict.ABORT),  # just past the 2xx and the 5xx ranges
])
def test_classify(status: int | None, verdict: Verdict) -> None:
    assert classify(status) is verdict


@pytest.mark.parametrize(("attempt", "lo", "hi", "rand", "expected"), [
    (1, 0.5, 300.0, 0.5, 0.5),      # nominal: lo
    (2, 0.5, 300.0, 0.5, 1.0),      # doubles
    (3, 0.5, 300.0, 0.5, 2.0),
    (10, 0.5, 300.0, 0.5, 256.0),
    (11, 0.5, 300.0, 0.5, 300.0),   # capped
    (100, 0.5, 300.0, 0.5, 300.0),  # no overflow
    (1, 1.0, 300.0, 0.0, 1.0 - JITTER),  # jitter low end
    (1, 1.0, 300.0, 1.0, 1.0 + JITTER),  # jitter high end
    (20, 1.0, 60.0, 1.0, 60.0),     # jitter never goes past the cap
    (0, 1.0, 60.0, 0.5, 1.0),       # attempt 0 counts as the first
])
def test_next_attempt_after(attempt: int, lo: float, hi: float, rand: float,
                            expected: float) -> None:
    assert next_attempt_after(attempt, lo, hi, rand) == pytest.approx(expected)


NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("", None), ("  ", None), ("soon", None), ("nan", None), ("inf", None),
    ("0", 0.0), ("3", 3.0), (" 7 ", 7.0), ("1.5", 1.5), ("-4", 0.0),
    (format_datetime(datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC), usegmt=True), 30.0),
    (format_datetime(datetime(2026, 1, 1, 11, 0, 0, tzinfo=UTC), usegmt=True), 0.0),
    ("Thu, 01 Jan 2026 12:01:00 -0000", 60.0),  # "-0000": no zone given, read as UTC
])
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_a_date_without_a_zone_is_utc_whatever_the_machines_zone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert parse_retry_after("Thu, 01 Jan 2026 12:01:00 -0000", NOW) == 60.0
    finally:
        monkeypatch.undo()
        time.tzset()


LIMITS = Limits(max_attempts=5, max_age=3600.0, backoff_min=1.0, backoff_max=60.0)


@pytest.mark.parametrize(("attempts", "verdict", "age", "retry_after", "state", "delay"), [
    (1, Verdict.RETRY, 0.0, None, State.RETRYING, 1.0),
    (3, Verdict.RETRY, 0.0, None, State.RETRYING, 4.0),
    (4, Verdict.RETRY, 10.0, None, State.RETRYING, 8.0),
    (5, Verdict.RETRY, 0.0, None, State.DEAD, None),        # out of attempts
    (1, Verdict.RETRY, 3600.0, None, State.DEAD, None),     # too old
    (1, Verdict.ABORT, 0.0, None, State.DEAD, None),        # 4xx: at once
    (1, Verdict.RETRY, 0.0, 30.0, State.RETRYING, 30.0),    # Retry-After wins over backoff
    (1, Verdict.RETRY, 0.0, 120.0, State.RETRYING, 120.0),  # ... even past backoff_max
    (1, Verdict.RETRY, 0.0, 9999.0, State.RETRYING, 300.0),  # capped at RETRY_AFTER_CAP
])
def test_after_failure(attempts: int, verdict: Verdict, age: float, retry_after: float | None,
                       state: State, delay: float | None) -> None:
    decision = after_failure(attempts=attempts, verdict=verdict, age=age, now=NOW,
                             retry_after=retry_after, limits=LIMITS, rand=0.5)
    assert decision.state is state
    if delay is not None:
        assert decision.next_try - NOW == pytest.approx(delay)
    else:
        assert decision.next_try == 0.0  # dead: no next try


def test_retry_delay_cap_follows_a_long_backoff_max() -> None:
    assert retry_delay(1, 1000.0, 1.0, 900.0, 0.5) == 900.0
    assert retry_delay(1, 1000.0, 1.0, 3600.0, 0.5) == 1000.0


@pytest.mark.parametrize(("state", "terminal"), [
    (State.PENDING, False), (State.RETRYING, False), (State.DELIVERED, True),
    (State.DEAD, True), (State.SKIPPED, True),
])
def test_terminal_states(state: State, terminal: bool) -> None:
    assert state.terminal is terminal
