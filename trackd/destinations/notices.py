"""What a destination says in the server log: a line when something changes, not per request.

- `destination down` (warning): the first failed attempt that will be retried (5xx, 429, a
  timeout, a network error) after a success, with its error;
- `destination up` (info): the first success after that, with how long it was down and how many
  attempts failed meanwhile;
- `messages dead-lettered` (warning): with their count and the last error; the first at once,
  then at most one line per `interval`, counting what was dead-lettered in between.

Each failed attempt is also a debug line. Nothing here names a user or a message; the
destination's URL is not logged at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from trackd.observability import get_logger

log = get_logger("destinations")
DEAD_LETTER_INTERVAL = 60.0


class Notices:
    """The log lines of one destination worker (used from its event loop only)."""

    def __init__(self, destination: str, *, clock: Callable[[], float] = time.monotonic,
                 interval: float = DEAD_LETTER_INTERVAL) -> None:
        self.destination = destination
        self._clock = clock
        self._interval = interval
        self._down_since: float | None = None
        self._failed = 0
        self._dead = 0
        self._dead_error = ""
        self._next_dead_line = 0.0

    def delivered(self) -> None:
        if self._down_since is None:
            return
        log.info("destination up", extra={
            "destination": self.destination, "failed_attempts": self._failed,
            "down_for": f"{self._clock() - self._down_since:.1f}s"})
        self._down_since, self._failed = None, 0

    def retrying(self, messages: int, error: str) -> None:
        self._failed += 1
        log.debug("delivery failed; will retry", extra={
            "destination": self.destination, "messages": messages, "error": error})
        if self._down_since is None:
            self._down_since = self._clock()
            log.warning("destination down; retrying", extra={
                "destination": self.destination, "error": error})

    def dead_lettered(self, messages: int, error: str) -> None:
        self._dead += messages
        self._dead_error = error
        self.flush()

    def flush(self, *, force: bool = False) -> None:
        """Write the dead-letter line now if one is due (or `force`) and any are counted."""
        now = self._clock()
        if self._dead and (force or now >= self._next_dead_line):
            log.warning("messages dead-lettered", extra={
                "destination": self.destination, "messages": self._dead,
                "error": self._dead_error})
            self._dead = 0
            self._next_dead_line = now + self._interval
