"""The per-source token bucket on a clock the test moves: bursts, refill, debt, Retry-After."""

from __future__ import annotations

from trackd.gateway.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_one_seconds_worth_then_refused_with_the_wait() -> None:
    clock = Clock()
    bucket = TokenBucket(5.0, clock)
    assert [bucket.take(1) for _ in range(5)] == [0.0] * 5
    assert bucket.take(1) == 1.0  # at least a second, as Retry-After counts whole seconds
    clock.now += 0.2  # one token back
    assert bucket.take(1) == 0.0
    assert bucket.take(1) == 1.0
    clock.now += 10  # refills to one second's worth, no more
    assert [bucket.take(1) for _ in range(6)] == [0.0] * 5 + [1.0]


def test_a_batch_bigger_than_the_bucket_passes_when_full_and_leaves_debt() -> None:
    clock = Clock()
    bucket = TokenBucket(5.0, clock)
    assert bucket.take(12) == 0.0  # refusing it would refuse it forever
    assert bucket.tokens == -7
    assert bucket.take(1) == 2.0  # ceil((1 + 7) / 5)
    clock.now += 1.6
    assert bucket.take(1) == 0.0
    assert bucket.take(12) == 1.0  # the empty bucket is full again in a second
    clock.now += 0.99
    assert bucket.take(12) == 1.0
    clock.now += 0.01
    assert bucket.take(12) == 0.0
