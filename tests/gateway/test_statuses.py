"""Every status of the contract's table, over real HTTP, and never a 500."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.gateway.helpers import error_of, new_id, post, stored, stored_one

SINGLE_PATHS = ["/v1/track", "/v1/identify", "/v1/page", "/v1/screen", "/v1/group", "/v1/alias",
                "/v1/t", "/v1/i", "/v1/p", "/v1/s", "/v1/g", "/v1/a"]
BATCH_PATHS = ["/v1/batch", "/v1/import", "/v1/b"]
VALID = {"track": {"userId": "u", "event": "E"}, "identify": {"userId": "u"},
         "page": {"userId": "u"}, "screen": {"userId": "u"},
         "group": {"userId": "u", "groupId": "g"}, "alias": {"userId": "u", "previousId": "p"}}


def padded(size: int, **fields: Any) -> bytes:
    """A valid track message whose JSON encoding is exactly `size` bytes."""
    base = {"userId": "u", "event": "Padded", **fields, "properties": {"pad": ""}}
    overhead = len(json.dumps(base, separators=(",", ":")).encode())
    base["properties"]["pad"] = "x" * (size - overhead)
    body = json.dumps(base, separators=(",", ":")).encode()
    assert len(body) == size
    return body


def padded_batch(size: int, message_id: str) -> bytes:
    """A valid batch body of exactly `size` bytes (items of about 30 KB)."""
    items = [{"type": "track", "userId": "u", "event": "Padded", "messageId": f"{message_id}-{i}",
              "properties": {"pad": "x" * 30000}} for i in range(size // 30200)]
    doc = {"batch": items, "pad": ""}
    overhead = len(json.dumps(doc, separators=(",", ":")).encode())
    doc["pad"] = "y" * (size - overhead)
    body = json.dumps(doc, separators=(",", ":")).encode()
    assert len(body) == size
    return body


# -- 400 invalid_request_error -------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b"not json", b"{\"userId\": \"u\",", b"", b"{'userId': 'u'}", b"\x00\x01",
], ids=["text", "truncated", "empty", "single-quotes", "binary"])
@pytest.mark.parametrize("path", ["/v1/track", "/v1/batch"])
def test_a_body_that_is_not_json_is_400(live: Server, path: str, body: bytes) -> None:
    response = post(live, path, body)
    assert response.status_code == 400, response.text
    assert error_of(response)[0] == "invalid_request_error"


@pytest.mark.parametrize("body", [b"[1, 2]", b"\"track\"", b"42", b"null", b"true"])
@pytest.mark.parametrize("path", ["/v1/identify", "/v1/import"])
def test_a_body_that_is_not_an_object_is_400(live: Server, path: str, body: bytes) -> None:
    response = post(live, path, body)
    assert response.status_code == 400, response.text
    assert error_of(response) == ("invalid_request_error", "Body must be a JSON object")


@pytest.mark.parametrize("path", ["/v1/track", "/v1/b"])
def test_a_body_that_is_not_utf8_is_400(live: Server, path: str) -> None:
    message_id = new_id()
    item = b'{"type":"track","userId":"u\xff\xfe","event":"E","messageId":"' + \
        message_id.encode() + b'"}'
    body = item if path == "/v1/track" else b'{"batch":[' + item + b"]}"
    response = post(live, path, body)
    assert response.status_code == 400, response.text
    assert error_of(response)[0] == "invalid_request_error"
    assert stored(live, message_id) == []


# -- 400 validation_error ------------------------------------------------------------------

def test_a_single_message_failing_validation_is_400(live: Server) -> None:
    message_id = new_id()
    response = post(live, "/v1/track", {"userId": "u", "messageId": message_id})
    assert response.status_code == 400
    assert error_of(response) == ("validation_error", "Missing required field: event")
    assert stored(live, message_id) == []


def test_the_error_body_has_the_one_shape_every_sdk_reads(live: Server) -> None:
    response = post(live, "/v1/track", {"userId": "u"})
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "success": False,
        "error": {"type": "validation_error", "message": "Missing required field: event"},
        "code": "validation_error", "message": "Missing required field: event"}


# -- 413 -----------------------------------------------------------------------------------

def test_a_single_message_of_exactly_32768_bytes_is_accepted(live: Server) -> None:
    message_id = new_id()
    response = post(live, "/v1/track", padded(32768, messageId=message_id))
    assert response.status_code == 200, response.text
    assert len(stored(live, message_id)) == 1


@pytest.mark.parametrize("encoding", [None, "gzip"])
def test_a_single_message_over_32768_decoded_bytes_is_413(live: Server,
                                                         encoding: str | None) -> None:
    message_id = new_id()
    body = padded(32769, messageId=message_id)
    headers = {}
    if encoding:
        body, headers = gzip.compress(body), {"Content-Encoding": encoding}
        assert len(body) < 1000
    response = post(live, "/v1/track", body, headers=headers)
    assert response.status_code == 413, response.text
    assert error_of(response) == ("validation_error", "Event payload exceeds 32KB limit")
    assert stored(live, message_id) == []


def test_a_batch_of_exactly_512000_bytes_is_accepted(live: Server) -> None:
    message_id = new_id()
    response = post(live, "/v1/batch", padded_batch(512000, message_id))
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 16
    assert len(stored(live, f"{message_id}-15")) == 1


@pytest.mark.parametrize("encoding", [None, "gzip"])
@pytest.mark.parametrize("path", BATCH_PATHS)
def test_a_batch_over_512000_decoded_bytes_is_413(live: Server, path: str,
                                                 encoding: str | None) -> None:
    message_id = new_id()
    body = padded_batch(512001, message_id)
    headers = {}
    if encoding:
        body, headers = gzip.compress(body), {"Content-Encoding": encoding}
    response = post(live, path, body, headers=headers)
    assert response.status_code == 413, response.text
    assert error_of(response) == ("validation_error", "Batch payload exceeds 500KB limit")
    assert stored(live, f"{message_id}-0") == []


# -- 400 batch shape -----------------------------------------------------------------------

def test_more_than_2500_items_is_400_and_2500_is_fine(live: Server) -> None:
    prefix = new_id()
    items = [{"type": "track", "userId": "u", "event": "E", "messageId": f"{prefix}-{i}"}
             for i in range(2501)]
    response = post(live, "/v1/batch", {"batch": items})
    assert response.status_code == 400, response.text
    assert error_of(response)[0] == "validation_error"
    assert "2500" in error_of(response)[1]
    assert stored(live, f"{prefix}-0") == []
    response = post(live, "/v1/batch", {"batch": items[:2500]})
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "accepted": 2500}
    assert len(stored(live, f"{prefix}-2499")) == 1


@pytest.mark.parametrize(("body", "message"), [
    ({}, "Missing required field: batch"),
    ({"batch": None}, "Missing required field: batch"),
    ({"sentAt": "2024-05-01T12:00:00Z"}, "Missing required field: batch"),
    ({"batch": {"type": "track"}}, "batch must be an array"),
    ({"batch": "[]"}, "batch must be an array"),
    ({"batch": 3}, "batch must be an array"),
], ids=["empty", "null", "no-batch", "object", "string", "number"])
def test_batch_missing_or_not_an_array_is_400(live: Server, body: dict[str, Any],
                                              message: str) -> None:
    response = post(live, "/v1/batch", body)
    assert response.status_code == 400, response.text
    assert error_of(response) == ("validation_error", message)


def test_a_batch_without_any_valid_item_is_400_with_the_rejected_list(live: Server) -> None:
    ids = [new_id(), new_id()]
    response = post(live, "/v1/batch", {"batch": [
        {"type": "track", "userId": "u", "messageId": ids[0]},
        {"type": "alias", "userId": "u", "messageId": ids[1]}]})
    assert response.status_code == 400, response.text
    doc = response.json()
    assert doc["success"] is False
    assert doc["error"]["type"] == doc["code"] == "validation_error"
    assert doc["rejected"] == [
        {"index": 0, "messageId": ids[0], "error": {
            "type": "validation_error", "message": "Missing required field: event"}},
        {"index": 1, "messageId": ids[1], "error": {
            "type": "validation_error", "message": "Missing required field: previousId"}}]
    assert stored(live, ids[0]) == stored(live, ids[1]) == []


# -- 401 -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/track", "/v1/batch"])
@pytest.mark.parametrize("how", ["none", "unknown-basic", "unknown-body", "bearer-only",
                                 "empty-basic", "garbage-basic"])
def test_a_missing_or_unknown_write_key_is_401_and_nothing_is_stored(
        live: Server, path: str, how: str) -> None:
    message_id = new_id()
    message: dict[str, Any] = {"type": "track", "userId": "u", "event": "E",
                               "messageId": message_id}
    body: dict[str, Any] = message if path == "/v1/track" else {"batch": [message]}
    headers: dict[str, str] = {}
    key: str | None = None
    if how == "unknown-basic":
        key = "wk_nope"
    elif how == "unknown-body":
        body["writeKey"] = "wk_nope"
    elif how == "bearer-only":
        headers["Authorization"] = "Bearer wk_web"
    elif how == "empty-basic":
        headers["Authorization"] = "Basic Og=="  # ":"
    elif how == "garbage-basic":
        headers["Authorization"] = "Basic !!!not-base64"
    response = post(live, path, body, key=key, headers=headers)
    assert response.status_code == 401, response.text
    assert error_of(response)[0] == "authentication_error"
    assert stored(live, message_id) == []


# -- 429 -----------------------------------------------------------------------------------

def test_over_the_source_rate_limit_is_429_with_retry_after(live: Server) -> None:
    """Source `limited` allows one message per 50 s (only this test uses it)."""
    answers: list[tuple[int, str | None, str]] = []
    with httpx.Client(base_url=live.url, auth=("wk_limited", ""), timeout=30) as client:
        for _ in range(4):
            message_id = new_id()
            r = client.post("/v1/track", json={"userId": "u", "event": "E",
                                               "messageId": message_id})
            answers.append((r.status_code, r.headers.get("retry-after"), message_id))
            if r.status_code == 429:
                assert error_of(r) == ("rate_limit_error", "Rate limit of source limited exceeded")
    assert [a[0] for a in answers] == [200, 429, 429, 429]
    for status, retry_after, message_id in answers:
        if status == 429:
            assert retry_after is not None and 1 <= int(retry_after) <= 50
            assert stored(live, message_id) == []
        else:
            assert len(stored(live, message_id)) == 1
    # Other sources are not limited.
    for _ in range(20):
        assert post(live, "/v1/track", {"userId": "u", "event": "E"}).status_code == 200


def test_a_batch_bigger_than_one_second_of_the_rate_limit_gets_through(live: Server) -> None:
    """Source `bulk` allows one per 50 s: refusing 12 at once would refuse them forever."""
    prefix = new_id()
    items = [{"type": "track", "userId": "u", "event": "E", "messageId": f"{prefix}-{i}"}
             for i in range(12)]
    response = post(live, "/v1/batch", {"batch": items}, key="wk_bulk")
    assert response.status_code == 200, response.text
    assert len(stored(live, f"{prefix}-11")) == 1
    after = post(live, "/v1/track", {"userId": "u", "event": "E"}, key="wk_bulk")
    assert after.status_code == 429  # in debt: 11 messages past the bucket, 50 s each
    assert 500 <= int(after.headers["retry-after"]) <= 600


# -- never 500 -----------------------------------------------------------------------------

NASTY: list[bytes] = [
    b"{" * 5000, b"[" * 5000 + b"]" * 5000, b'{"userId":' + b"[" * 990 + b"]" * 990 + b"}",
    b'{"userId":"u","event":"E","properties":{"a":' + b"[" * 985 + b"]" * 985 + b"}}",
    b'{"userId":"u","event":"E","properties":{"a":' + b'{"k":' * 985 + b"1" + b"}" * 985 + b"}}",
    b'{"userId":"u","event":"E","properties":{"n":1e999}}',
    b'{"userId":123456789012345678901234567890123,"event":"E"}',
    b'{"userId":1.5e300,"event":"E"}', b'{"userId":-0.0,"event":"E"}',
    b'{"userId":"u","event":"E","timestamp":"0001-01-01T00:00:00+01:00"}',
    b'{"userId":"u","event":"E","timestamp":"9999-12-31T23:59:59-01:00"}',
    b'{"userId":"u","event":"E","timestamp":"0001-01-01T00:00:00Z",'
    b'"sentAt":"9999-12-31T23:59:59Z"}',
    b'{"userId":"u","event":"E","timestamp":"9999-12-31T23:59:59Z",'
    b'"sentAt":"0001-01-01T00:00:00Z"}',
    b'{"userId":"\\ud800","event":"E"}', b'{"userId":"u","event":"\\u0000"}',
    b'{"userId":"u","event":"E","properties":{"\\ud83d":1}}',
    b'{"userId":"u","event":"E","context":{"ip":5}}', b'{"userId":"u","event":"E","context":{}}',
    b'{"userId":"u","event":"E","writeKey":5}', b'{"userId":"u","event":"E","writeKey":null}',
    b'{"userId":"u","event":"E","messageId":""}', b'{"userId":"u","event":"E","sentAt":5}',
    b'{"userId":"u","event":"E","type":null}', b'{"userId":{"a":1},"event":"E"}',
    b'{"userId":true,"event":"E"}', b'{"userId":"u","event":["E"]}',
    b'{"userId":"u","groupId":[],"previousId":{},"name":5,"category":[]}',
    b'{"userId":"u","event":"E","userId":"dup"}', b'{"":1,"userId":"u","event":"E"}',
    b"\xef\xbb\xbf{\"userId\":\"u\",\"event\":\"E\"}",
]


def batch_of(raw: bytes) -> bytes:
    return b'{"batch":[' + raw + b',{"type":"track","userId":"u","event":"E"}],' \
        b'"context":{"ip":"1"},"sentAt":"2024-05-01T12:00:00Z"}'


@pytest.mark.parametrize("raw", NASTY, ids=[f"nasty{i}" for i in range(len(NASTY))])
def test_nothing_a_client_sends_gets_a_500(live: Server, raw: bytes) -> None:
    with httpx.Client(base_url=live.url, auth=("wk_web", ""), timeout=30) as client:
        for path in ("/v1/track", "/v1/identify", "/v1/group", "/v1/alias"):
            assert client.post(path, content=raw).status_code in (200, 400, 413), path
        assert client.post("/v1/batch", content=batch_of(raw)).status_code in (200, 400, 413)
        assert client.post("/v1/batch", content=raw).status_code in (200, 400, 413)
        envelope = b'{"batch":[{"type":"track","userId":"u","event":"E"}],"context":' + \
            raw + b',"integrations":' + raw + b"}"
        assert client.post("/v1/batch", content=envelope).status_code in (200, 400, 413)


@pytest.mark.parametrize(("field", "value"), [
    ("sentAt", "yesterday"), ("sentAt", 17), ("context", "c"), ("integrations", [1]),
    ("writeKey", 5),
])
def test_a_bad_batch_envelope_is_400_not_500(live: Server, field: str, value: Any) -> None:
    message_id = new_id()
    response = post(live, "/v1/batch", {"batch": [
        {"type": "track", "userId": "u", "event": "E", "messageId": message_id}],
        field: value})
    assert response.status_code in (200, 400), response.text
    if field != "writeKey":
        assert response.status_code == 400
        assert error_of(response)[0] == "validation_error"
        assert stored(live, message_id) == []


_REQUESTS = re.compile(r'^trackd_http_requests_total\{path="(/v1/[^"]*)",status="(\d+)"\} (\S+)$',
                       re.M)


def _requests_by_status(server: Server) -> Counter[tuple[str, str]]:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    return Counter({(path, status): int(float(n)) for path, status, n in _REQUESTS.findall(text)})


def test_the_metrics_count_this_tests_hostile_requests_and_no_5xx(live: Server) -> None:
    before = _requests_by_status(live)
    with httpx.Client(base_url=live.url, auth=("wk_web", ""), timeout=30) as client:
        answered = Counter((path, str(client.post(path, content=body).status_code))
                           for raw in NASTY
                           for path, body in (("/v1/track", raw), ("/v1/batch", batch_of(raw))))
    counted = _requests_by_status(live) - before  # this test's traffic only
    assert counted == answered
    assert not [key for key in counted if key[1].startswith("5")], counted


def test_success_is_exactly_200_with_a_small_json_body(live: Server) -> None:
    for path in SINGLE_PATHS:
        kind = {"t": "track", "i": "identify", "p": "page", "s": "screen", "g": "group",
                "a": "alias"}.get(path[4:], path[4:])
        message_id = new_id()
        response = post(live, path, {**VALID[kind], "messageId": message_id})
        assert response.status_code == 200, (path, response.text)
        assert response.json() == {"success": True}
        assert stored_one(live, message_id)["type"] == kind
    for path in BATCH_PATHS:
        message_id = new_id()
        response = post(live, path, {"batch": [{**VALID["page"], "type": "page",
                                                "messageId": message_id}]})
        assert response.status_code == 200
        assert response.json() == {"success": True, "accepted": 1}
        assert stored_one(live, message_id)["type"] == "page"
