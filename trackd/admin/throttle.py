"""Failed admin authentications, counted per client address: a guessing client gets 429.

Each address may fail `failures` times in a row; it earns one more attempt every
60 / `failures` seconds (a token bucket). While it has none left, every admin request from it
is answered 429 with Retry-After, whether its token is right or not, so that guessing on learns
nothing. IPv6 clients are counted per /64 (one host usually owns a whole /64). At most
MAX_CLIENTS addresses are remembered; those back to a full bucket are forgotten first.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable

WINDOW = 60.0
MAX_CLIENTS = 10_000
AUTH_FAILED = "admin_auth_failed"
"""The request state key under which the admin guard hands the pages it lets through (the
console's login form) a callable that counts one failed login for the client."""


def client_key(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if ip.version == 6 and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)


class AuthThrottle:
    def __init__(self, failures: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = float(failures)
        self._refill = failures / WINDOW  # attempts earned per second
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (attempts left, when)

    def _left(self, key: str, now: float) -> float:
        left, when = self._buckets.get(key, (self._capacity, now))
        return min(self._capacity, left + (now - when) * self._refill)

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try again; None when it may try now."""
        left = self._left(client_key(address), self._clock())
        return None if left >= 1 else max(1, math.ceil((1 - left) / self._refill))

    def failed(self, address: str) -> None:
        key, now = client_key(address), self._clock()
        self._buckets[key] = (max(0.0, self._left(key, now) - 1), now)
        if len(self._buckets) > MAX_CLIENTS:
            self._forget(now)

    def _forget(self, now: float) -> None:
        full = [k for k in self._buckets if self._left(k, now) >= self._capacity]
        for key in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[key]
