"""Every exception trackd raises on purpose, in one tree.

    TrackdError
    ├── ConfigError                 bad trackd.toml / environment; one clear line at start-up
    │   └── PlanError               a tracking plan that does not load (file:line: field: why)
    ├── RequestRejected             an HTTP request refused; carries status, error type, message
    │   ├── AuthenticationError     401 authentication_error
    │   ├── InvalidRequest          400 invalid_request_error (not JSON, not an object, bad UTF-8)
    │   ├── ValidationFailed        400/413 validation_error
    │   ├── RateLimited             429 rate_limit_error (+ Retry-After)
    │   └── Unavailable             503 unavailable (+ Retry-After): log full, disk full, shutdown
    ├── LogError                    the durable log could not do what was asked
    │   ├── LogFull                 too much waiting to be committed: back-pressure
    │   ├── LogClosed               the writer is shutting down
    │   ├── LogWriteFailed          the commit failed (disk full, I/O error, no PubAck in time)
    │   └── LogUnavailable          the log cannot be reached (NATS down): nothing read or stored
    ├── QueryRefused                a warehouse query that is not read-only or does not parse
    └── DeliveryError               a destination did not take a message
        ├── RetryableDeliveryError  408, 429, 5xx, network: try again later
        └── PermanentDeliveryError  other 4xx: give up now
"""

from __future__ import annotations


class TrackdError(Exception):
    """Base of every trackd exception."""


class ConfigError(TrackdError):
    """The configuration is invalid; the message says which key and why."""


class PlanError(ConfigError):
    """A tracking plan is invalid; the message names the file, the line and the field."""

    def __init__(self, message: str, *, line: int = 0) -> None:
        super().__init__(message)
        self.line = line
        """The line of the plan file it points at (0: not known)."""


class RequestRejected(TrackdError):
    status = 400
    error_type = "invalid_request_error"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, message={self.message!r})"


class AuthenticationError(RequestRejected):
    status = 401
    error_type = "authentication_error"


class InvalidRequest(RequestRejected):
    status = 400
    error_type = "invalid_request_error"


class ValidationFailed(RequestRejected):
    status = 400
    error_type = "validation_error"

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class RateLimited(RequestRejected):
    status = 429
    error_type = "rate_limit_error"


class Unavailable(RequestRejected):
    status = 503
    error_type = "unavailable"


class LogError(TrackdError):
    """The durable log could not take or give records."""


class LogFull(LogError):
    """More records are waiting for a commit than the configured bound."""


class LogClosed(LogError):
    """The writer has stopped (shutdown)."""


class LogWriteFailed(LogError):
    """A commit failed; none of its records were stored."""


class LogUnavailable(LogError):
    """The log's servers cannot be reached (the NATS log); retried until they are back."""


class QueryRefused(TrackdError):
    """A warehouse query was refused: it writes, or it is not SQL DuckDB can parse."""


class DeliveryError(TrackdError):
    def __init__(self, message: str, *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class RetryableDeliveryError(DeliveryError):
    """408, 429, 5xx or a network error: the message is tried again later."""


class PermanentDeliveryError(DeliveryError):
    """Any other 4xx: the destination will never take this message."""
