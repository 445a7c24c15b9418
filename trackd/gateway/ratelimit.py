"""Per-source token buckets (messages per second), one set per gateway process."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens per second, bursting up to one second's worth."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self.tokens = self.capacity
        self._clock = clock
        self.updated = clock()

    def take(self, amount: int) -> float:
        """Take `amount` tokens; 0.0 when allowed, else the seconds to wait before retrying.

        A request larger than the bucket (a batch bigger than one second's worth) is let
        through when the bucket is full and leaves it in debt; refusing it would refuse it
        forever, as the bucket never holds more than `capacity`.
        """
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if amount <= self.tokens or self.tokens >= self.capacity:
            self.tokens -= amount
            return 0.0
        return max(1.0, math.ceil((min(amount, self.capacity) - self.tokens) / self.rate))
