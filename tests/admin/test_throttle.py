"""The failed-login budget per client: spent, earned back over time, counted per IPv6 /64."""

from __future__ import annotations

from trackd.admin.throttle import AuthThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_is_spent_then_earned_back() -> None:
    clock = Clock()
    throttle = AuthThrottle(3, clock)
    for _ in range(3):
        assert throttle.retry_after("192.0.2.1") is None
        throttle.failed("192.0.2.1")
    assert throttle.retry_after("192.0.2.1") == 20  # one attempt per 60 / 3 s
    assert throttle.retry_after("192.0.2.2") is None  # another client is not affected
    clock.now += 20
    assert throttle.retry_after("192.0.2.1") is None
    throttle.failed("192.0.2.1")
    assert throttle.retry_after("192.0.2.1") == 20


def test_ipv6_clients_are_counted_per_64() -> None:
    throttle = AuthThrottle(2, Clock())
    throttle.failed("2001:db8:1:2::1")
    throttle.failed("2001:db8:1:2:ffff::9")
    assert throttle.retry_after("2001:db8:1:2::77") is not None
    assert throttle.retry_after("2001:db8:1:3::1") is None
    throttle.failed("::ffff:192.0.2.7")
    throttle.failed("192.0.2.7")
    assert throttle.retry_after("192.0.2.7") is not None
