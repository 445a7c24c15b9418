"""The retry policy and the request URL, as tables."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from trackd.client import APIError, ConfigurationError, NetworkError, QueueFullError
from trackd.client._errors import DeliveryError
from trackd.client._policy import (
    RETRY_AFTER_MAX,
    backoff_delay,
    is_retryable,
    parse_retry_after,
)
from trackd.client._request import _parse_error_body, batch_url


def api(status: int) -> APIError:
    return APIError(status, "code", "message")


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (NetworkError("connection refused"), True),
        (api(408), True),
        (api(429), True),
        (api(500), True),
        (api(502), True),
        (api(503), True),
        (api(504), True),
        (api(501), True),
        (api(599), True),
        (api(400), False),
        (api(401), False),
        (api(403), False),
        (api(404), False),
        (api(413), False),
        (api(422), False),
        (api(301), False),
        (QueueFullError("full"), False),
    ],
)
def test_only_no_answer_408_429_and_5xx_are_retried(error: DeliveryError, retry: bool) -> None:
    assert is_retryable(error) is retry


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("0", 0.0),
        ("1", 1.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("100000", RETRY_AFTER_MAX),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        (formatdate(NOW + 30, usegmt=True), 30.0),
        (formatdate(NOW - 30, usegmt=True), 0.0),
        (formatdate(NOW + 3600, usegmt=True), RETRY_AFTER_MAX),
        (formatdate(NOW + 30).replace("+0000", "-0000"), 30.0),
    ],
)
def test_retry_after_is_seconds_or_an_http_date_capped(
    header: str | None, seconds: float | None
) -> None:
    assert parse_retry_after(header, NOW) == seconds


@pytest.mark.parametrize(
    ("retry", "rand", "delay"),
    [
        (1, 0.0, 0.25),
        (1, 0.999999, 0.4999995),
        (2, 0.0, 0.5),
        (3, 0.0, 1.0),
        (4, 1.0, 4.0),
        (10, 1.0, 60.0),
        (10, 0.0, 30.0),
        (10_000, 1.0, 60.0),
    ],
)
def test_backoff_doubles_with_jitter_in_the_upper_half_and_is_capped(
    retry: int, rand: float, delay: float
) -> None:
    assert backoff_delay(retry, 0.5, 60.0, rand) == pytest.approx(delay)


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("http://127.0.0.1:8088", "http://127.0.0.1:8088/v1/batch"),
        ("http://127.0.0.1:8088/", "http://127.0.0.1:8088/v1/batch"),
        ("https://track.example.com/prefix/", "https://track.example.com/prefix/v1/batch"),
    ],
)
def test_batch_url_drops_a_trailing_slash_and_keeps_a_prefix(host: str, url: str) -> None:
    assert batch_url(host) == url


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8088", "ftp://example.com", "http://", "", "http://exa mple.com"]
)
def test_a_host_that_is_not_an_http_url_is_a_configuration_error(host: str) -> None:
    with pytest.raises(ConfigurationError, match="host must be"):
        batch_url(host)


@pytest.mark.parametrize(
    ("body", "parsed"),
    [
        (
            b'{"success":false,"error":{"type":"validation_error","message":"Bad"},'
            b'"code":"validation_error","message":"Bad"}',
            ("validation_error", "Bad"),
        ),
        (b'{"error":{"type":"rate_limit_error","message":"Slow"}}', ("rate_limit_error", "Slow")),
        (b'{"code":"x"}', ("x", '{"code":"x"}')),
        (b"[1, 2]", (None, "[1, 2]")),
        (b"<html>Bad Gateway</html>", (None, "<html>Bad Gateway</html>")),
        (b"", (None, None)),
    ],
)
def test_error_bodies_give_code_and_message(
    body: bytes, parsed: tuple[str | None, str | None]
) -> None:
    assert _parse_error_body(body) == parsed
