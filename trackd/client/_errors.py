"""Every exception `trackd.client` raises or reports, in one tree.

    ClientError                    base of everything below
    ├── ConfigurationError         bad `Client(...)` arguments; raised by the constructor
    ├── ValidationError            a message the server would refuse; raised by track() and co.
    └── DeliveryError              a message that was not delivered; only ever *reported*
        ├── APIError               the server answered with an error status
        │   └── RejectedError      the server refused one message of a batch (and keeps it)
        ├── NetworkError           no answer: connection refused, reset or timed out
        ├── QueueFullError         dropped at the call: the queue was full
        └── ClientClosedError      dropped: the client was shut down before it could send

The first two are programming errors and are raised into the calling code; `ConfigurationError`
and `ValidationError` are also `ValueError`s. A `DeliveryError` is never raised into the calling
code: it goes to `on_error(error, batch)` and to each message's `callback(error, message)`.
"""

from __future__ import annotations

from collections.abc import Mapping


class ClientError(Exception):
    """Base class of every exception trackd.client raises or reports."""


class ConfigurationError(ClientError, ValueError):
    """An argument to `Client(...)` is unusable (empty write key, bad host, negative size...)."""


class ValidationError(ClientError, ValueError):
    """The message would be refused by the server; `reason` is the server's exact text.

    `str(error) == error.reason`, e.g. `Missing required field: event`.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __repr__(self) -> str:
        return f"ValidationError({self.reason!r})"


class DeliveryError(ClientError):
    """A message was not delivered. Reported to `on_error`/`callback`, never raised."""


class APIError(DeliveryError):
    """The server refused the batch (or kept failing): `status`, `code` and `message` from its body.

    `code` and `message` come from the JSON error body `{"code": ..., "message": ...}`; a body
    without them gives `code == "unknown"` and the start of the body (or the HTTP reason) as
    `message`. `retry_after` is the server's Retry-After in seconds, when it sent one;
    `rejected` maps batch positions to per-message reasons, when the body listed them.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        retry_after: float | None = None,
        rejected: Mapping[int, RejectedError] | None = None,
    ) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.rejected: Mapping[int, RejectedError] = rejected or {}

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"APIError({self.status!r}, {self.code!r}, {self.message!r})"


class RejectedError(APIError):
    """The server refused one message of a batch, with its own reason; the rest were handled
    as the batch was. `index` is the message's position in the batch. trackd keeps refused
    messages in its quarantine, where they can be fixed and resent.

    A batch answered 200 can still carry these, e.g. for a rule only the server knows."""

    def __init__(self, status: int, code: str, message: str, index: int) -> None:
        super().__init__(status, code, message)
        self.index = index

    def __repr__(self) -> str:
        return f"RejectedError({self.status!r}, {self.code!r}, {self.message!r}, {self.index!r})"


class NetworkError(DeliveryError):
    """The request got no HTTP answer; the underlying `OSError` is `__cause__`."""


class QueueFullError(DeliveryError):
    """The message was dropped at the call because `max_queue_size` messages were waiting."""


class ClientClosedError(DeliveryError):
    """The message was dropped because the client stopped (exit timeout, or after exit)."""
