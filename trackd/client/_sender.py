"""Deliver one batch: post it, and retry what the policy calls retryable, with backoff."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from trackd.client._errors import APIError, ClientClosedError, DeliveryError
from trackd.client._policy import backoff_delay, is_retryable
from trackd.client._request import Endpoint
from trackd.client._types import Item

_log = logging.getLogger("trackd.client")


@dataclass(frozen=True)
class Outcome:
    """How a batch ended: `error` for the batch as a whole (None: delivered), and `rejected`
    for messages the server refused one by one (batch position -> reason)."""

    error: DeliveryError | None = None
    rejected: Mapping[int, DeliveryError] = field(default_factory=dict)


class Sender:
    """Retrying delivery of batches through one `Endpoint`; safe to call from several threads.

    `deliver` tries once and then up to `max_retries` more times. Before a retry it waits the
    server's Retry-After when the answer carried one (capped at 300 s), otherwise a jittered
    exponential backoff (`backoff_base` doubling per retry, at most `backoff_max`). Every retry
    counts, whatever caused it, so a batch is given up after at most `max_retries + 1` requests.
    Every retry re-sends the same messages (same messageIds), so the server can drop duplicates.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        max_retries: int = 10,
        backoff_base: float = 0.5,
        backoff_max: float = 60.0,
    ) -> None:
        self.endpoint = endpoint
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._stopped = threading.Event()
        self._failing = False  # an attempt failed and none has succeeded since (logged once)

    def deliver(self, items: Sequence[Item]) -> Outcome:
        """How the batch ended: accepted (perhaps with some messages refused one by one), or
        the error that ended the attempts.

        Never raises. After `stop()`, a pending wait ends at once and the batch is given up with
        `ClientClosedError` (its `__cause__` is the last failure).
        """
        encoded = [item.encoded for item in items]
        retry = 0
        while True:
            try:
                rejected = self.endpoint.post(encoded, retry)
                _log.debug("batch delivered: %d messages after %d retries", len(items), retry)
                if self._failing:
                    self._failing = False
                    _log.warning("delivering to %s again", self.endpoint.url)
                return Outcome(None, rejected)
            except DeliveryError as error:
                failure = error
            if retry == 0 and not self._failing and is_retryable(failure) and self.max_retries:
                # Said at once, not when the retries run out minutes later; once per outage.
                self._failing = True
                where = "" if self.endpoint.url in str(failure) else f" to {self.endpoint.url}"
                _log.warning(
                    "could not deliver %d messages%s: %s; retrying up to %d times over at most "
                    "%.0f s (lower max_retries or backoff_max to give up sooner)",
                    len(items), where, failure, self.max_retries, self.retry_budget())
            if not is_retryable(failure) or retry >= self.max_retries:
                _log.warning(
                    "batch of %d messages not delivered after %d retries: %s",
                    len(items),
                    retry,
                    failure,
                )
                rejected = failure.rejected if isinstance(failure, APIError) else {}
                return Outcome(failure, rejected)
            retry += 1
            wait = self._wait_before(retry, failure)
            _log.debug("retry %d of %d in %.3fs after: %s", retry, self.max_retries, wait, failure)
            if self._stopped.wait(wait):
                closed = ClientClosedError(f"client stopped before a retry succeeded: {failure}")
                closed.__cause__ = failure
                return Outcome(closed)

    def retry_budget(self) -> float:
        """The longest a batch can spend waiting between attempts without Retry-After."""
        return sum(backoff_delay(n, self.backoff_base, self.backoff_max, 1.0)
                   for n in range(1, self.max_retries + 1))

    def stop(self) -> None:
        """End pending and future retry waits at once (used when shutdown runs out of time)."""
        self._stopped.set()

    def _wait_before(self, retry: int, failure: DeliveryError) -> float:
        if isinstance(failure, APIError) and failure.retry_after is not None:
            return failure.retry_after
        return backoff_delay(retry, self.backoff_base, self.backoff_max, random.random())
