"""Senders: request shapes through httpx.MockTransport, failures through a real receiver."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest

from tests.destinations.conftest import destination
from tests.destinations.receiver import Receiver
from trackd.destinations.senders import (
    SegmentSender,
    WebhookSender,
    batch_url,
    build_sender,
    signature,
)
from trackd.errors import PermanentDeliveryError, RetryableDeliveryError
from trackd.settings import DestinationSettings

BODY = json.dumps({"type": "track", "messageId": "m1", "userId": "u1", "event": "Clicked",
                   "sentAt": "2026-01-01T00:00:00.000Z",
                   "timestamp": "2026-01-01T00:00:01.000Z"}).encode()


def send(settings: DestinationSettings, bodies: list[bytes],
         handler: Any = None) -> tuple[int, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request) if handler else httpx.Response(200, json={"success": True})

    async def go() -> int:
        sender = build_sender(settings, httpx.MockTransport(record))
        try:
            return await sender.send(bodies)
        finally:
            await sender.aclose()

    return asyncio.run(go()), seen


def test_webhook_posts_one_bare_message_with_custom_headers() -> None:
    settings = destination(url="http://hooks.test/in", headers={"X-Team": "growth"})
    status, [request] = send(settings, [BODY])
    assert status == 200
    assert request.method == "POST" and str(request.url) == "http://hooks.test/in"
    assert request.content == BODY
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-team"] == "growth"
    assert request.headers["user-agent"].startswith("trackd/")
    assert "x-trackd-signature" not in request.headers


def test_webhook_batches_are_a_batch_object() -> None:
    settings = destination(url="http://hooks.test/in", batch_size=10)
    other = BODY.replace(b'"m1"', b'"m2"')
    _, [request] = send(settings, [BODY, other])
    doc = json.loads(request.content)
    assert [m["messageId"] for m in doc["batch"]] == ["m1", "m2"]


def test_webhook_signature_is_hmac_sha256_of_the_exact_body() -> None:
    settings = destination(url="http://hooks.test/in", secret="s3cret")
    _, [request] = send(settings, [BODY])
    expected = hmac.new(b"s3cret", request.content, hashlib.sha256).hexdigest()
    assert request.headers["x-trackd-signature"] == f"sha256={expected}"
    assert signature("s3cret", request.content) == f"sha256={expected}"


@pytest.mark.parametrize(("base", "url"), [
    ("http://h:1", "http://h:1/v1/batch"),
    ("http://h:1/", "http://h:1/v1/batch"),
    ("http://h:1/v1", "http://h:1/v1/batch"),
    ("http://h:1/v1/", "http://h:1/v1/batch"),
    ("http://h:1/v1/batch", "http://h:1/v1/batch"),
    ("https://api.segment.io", "https://api.segment.io/v1/batch"),
    ("http://h:1/proxy", "http://h:1/proxy/v1/batch"),
])
def test_batch_url(base: str, url: str) -> None:
    assert batch_url(base) == url


def test_segment_forwards_a_batch_with_write_key_in_basic_auth_and_body() -> None:
    settings = destination(url="http://other.test", type="segment", write_key="wk_other")
    assert isinstance(build_sender(settings), SegmentSender)
    _, [request] = send(settings, [BODY])
    assert str(request.url) == "http://other.test/v1/batch"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(
        b"wk_other:").decode()
    doc = json.loads(request.content)
    assert doc["writeKey"] == "wk_other"
    [item] = doc["batch"]
    # sentAt is dropped so the receiver keeps this timestamp instead of re-correcting skew
    assert "sentAt" not in item
    assert item["timestamp"] == "2026-01-01T00:00:01.000Z"
    assert item["messageId"] == "m1"


def test_build_sender_defaults_to_webhook() -> None:
    assert isinstance(build_sender(destination(url="http://h")), WebhookSender)


@pytest.mark.parametrize(("status", "headers", "error", "retry_after"), [
    (500, {}, RetryableDeliveryError, None),
    (503, {"Retry-After": "7"}, RetryableDeliveryError, 7.0),
    (429, {"Retry-After": "2"}, RetryableDeliveryError, 2.0),
    (408, {}, RetryableDeliveryError, None),
    (400, {}, PermanentDeliveryError, None),
    (404, {"Retry-After": "7"}, PermanentDeliveryError, None),
])
def test_failures_raise_the_classified_error(status: int, headers: dict[str, str],
                                             error: type[Exception],
                                             retry_after: float | None) -> None:
    settings = destination(url="http://hooks.test/in")
    with pytest.raises(error) as caught:
        send(settings, [BODY], lambda r: httpx.Response(status, headers=headers,
                                                        text="nope\nreally"))
    assert caught.value.status == status  # type: ignore[attr-defined]
    assert caught.value.retry_after == retry_after  # type: ignore[attr-defined]
    assert str(caught.value) == f"HTTP {status}: nope really"


def test_a_network_error_is_retryable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(RetryableDeliveryError) as caught:
        send(destination(url="http://hooks.test/in"), [BODY], refuse)
    assert caught.value.status is None
    assert "ConnectError" in str(caught.value)


def send_for_real(settings: DestinationSettings) -> int:
    """One send over the network (no mock transport)."""
    async def go() -> int:
        sender = build_sender(settings)
        try:
            return await sender.send([BODY])
        finally:
            await sender.aclose()

    return asyncio.run(go())


def test_a_real_receiver_gets_the_request(receiver: Receiver) -> None:
    assert send_for_real(destination(url=receiver.url + "/in")) == 200
    [request] = receiver.requests
    assert request.path == "/in" and request.body == BODY


def test_a_hanging_receiver_times_out_as_retryable(receiver: Receiver) -> None:
    receiver.reply(hang=True)
    with pytest.raises(RetryableDeliveryError, match="timed out after 0.3s"):
        send_for_real(destination(url=receiver.url + "/in", timeout=0.3))


def test_a_closed_port_is_retryable(receiver: Receiver) -> None:
    url = receiver.url
    receiver.stop()
    with pytest.raises(RetryableDeliveryError, match="network error"):
        send_for_real(destination(url=url))
