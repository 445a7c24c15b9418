"""Transport: gzip and deflate bodies, a gzip bomb, any Content-Type, CORS, the write key."""

from __future__ import annotations

import base64
import gzip
import json
import os
import socket
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.gateway.helpers import error_of, new_id, post, stored, stored_one

TRACKING_PATHS = ["/v1/track", "/v1/identify", "/v1/page", "/v1/screen", "/v1/group",
                  "/v1/alias", "/v1/t", "/v1/i", "/v1/p", "/v1/s", "/v1/g", "/v1/a",
                  "/v1/batch", "/v1/import", "/v1/b", "/v1/m"]


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress, "x-gzip": gzip.compress, "deflate": zlib.compress,
    "deflate-raw": raw_deflate}


# -- Content-Encoding ----------------------------------------------------------------------

@pytest.mark.parametrize("encoding", list(ENCODERS))
def test_compressed_singles_and_batches_are_decoded(live: Server, encoding: str) -> None:
    header = "deflate" if encoding == "deflate-raw" else encoding
    single_id, batch_id = new_id(), new_id()
    single = json.dumps({"userId": "u", "event": "Zipped", "messageId": single_id,
                         "properties": {"text": "ü" * 5000}}, ensure_ascii=False).encode()
    response = post(live, "/v1/track", ENCODERS[encoding](single),
                    headers={"Content-Encoding": header})
    assert response.status_code == 200, response.text
    assert stored_one(live, single_id)["properties"]["text"] == "ü" * 5000
    batch = json.dumps({"batch": [{"type": "identify", "userId": "u", "messageId": batch_id,
                                   "traits": {"x": "y" * 20000}}]}).encode()
    response = post(live, "/v1/batch", ENCODERS[encoding](batch),
                    headers={"Content-Encoding": header.upper()})
    assert response.status_code == 200, response.text
    assert stored_one(live, batch_id)["traits"]["x"] == "y" * 20000


def test_gzip_with_several_members_is_decoded_whole(live: Server) -> None:
    """RFC 1952: a gzip body may be members one after another (and zero padding after)."""
    message_id = new_id()
    body = json.dumps({"batch": [{"type": "track", "userId": "u", "event": "Members",
                                  "messageId": message_id}]}).encode()
    members = b"".join(gzip.compress(body[i:i + 10]) for i in range(0, len(body), 10))
    response = post(live, "/v1/batch", members + bytes(64), headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert stored_one(live, message_id)["event"] == "Members"


def test_a_bomb_split_into_many_gzip_members_is_413(live: Server) -> None:
    member = gzip.compress(bytes(8 << 20), compresslevel=1)
    response = post(live, "/v1/batch", member * 128, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413


@pytest.mark.parametrize(("encoding", "body"), [
    ("gzip", gzip.compress(b'{"userId":"u","event":"E"}') + b"trailing garbage"),
    ("gzip", b"this is not gzip"),
    ("gzip", gzip.compress(b'{"userId":"u","event":"E"}')[:-12]),
    ("deflate", b"\x00\x01\x02garbage"),
    ("br", b'{"userId":"u","event":"E"}'),
], ids=["trailing-garbage", "not-gzip", "truncated-gzip", "not-deflate", "unsupported"])
def test_a_body_that_does_not_decode_is_400(live: Server, encoding: str, body: bytes) -> None:
    response = post(live, "/v1/track", body, headers={"Content-Encoding": encoding})
    assert response.status_code == 400, response.text
    assert error_of(response)[0] == "invalid_request_error"


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """1 GiB of zeros, gzipped (about 1 MB)."""
    c = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(16 << 20)
    parts = [c.compress(block) for _ in range(64)]
    parts.append(c.flush())
    return b"".join(parts)


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_pids(server: Server) -> list[int]:
    assert server.proc is not None
    pids: list[int] = []
    for task in Path(f"/proc/{server.proc.pid}/task").iterdir():
        pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/track"])
def test_a_gzip_bomb_gets_413_quickly_with_bounded_memory(live: Server, bomb: bytes,
                                                         path: str) -> None:
    [worker] = worker_pids(live)
    before = peak_rss_kb(worker)
    cpu_before = cpu_seconds(worker)
    response = post(live, path, bomb, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413, response.text
    assert error_of(response)[1] in ("Batch payload exceeds 500KB limit",
                                     "Event payload exceeds 32KB limit")
    # CPU time, not wall time (the machine may be busy): inflating the whole GiB costs
    # seconds of CPU, stopping at the limit a few milliseconds.
    spent = cpu_seconds(worker) - cpu_before
    assert spent < 0.5, f"the worker spent {spent:.2f} s of CPU on the bomb"
    grown_mb = (peak_rss_kb(worker) - before) / 1024
    assert grown_mb < 50, f"the worker's peak memory grew by {grown_mb:.0f} MB"
    assert httpx.get(live.url + "/healthz").status_code == 200


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/track"])
def test_a_declared_oversized_body_is_refused_without_reading_it(live: Server,
                                                                path: str) -> None:
    # Only the head is sent: the 413 can only come from the declared length, no body byte.
    with socket.create_connection(("127.0.0.1", live.port), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {2 << 20}\r\n"
                     "Authorization: Basic d2tfd2ViOg==\r\n\r\n".encode())  # wk_web:
        answer = b""
        while not answer.endswith(b"}"):  # the JSON error body ends the answer
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"exceeds" in answer


# -- Content-Type is ignored ---------------------------------------------------------------

@pytest.mark.parametrize("content_type", [
    "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
    "application/octet-stream", None])
def test_json_is_parsed_whatever_the_content_type(live: Server,
                                                  content_type: str | None) -> None:
    message_id = new_id()
    headers = {"Content-Type": content_type} if content_type else {}
    response = post(live, "/v1/t", {"userId": "u", "event": "E", "messageId": message_id},
                    headers=headers)
    assert response.status_code == 200, response.text
    assert stored_one(live, message_id)["event"] == "E"


# -- CORS ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [*TRACKING_PATHS, "/v1/projects/wk_web/settings"])
def test_preflight_is_answered_on_every_tracking_path(live: Server, path: str) -> None:
    response = httpx.options(live.url + path, headers={
        "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-retry-count"})
    assert response.status_code in (200, 204)
    assert response.headers["access-control-allow-origin"] in ("*", "https://shop.example")
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in
               response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-retry-count"} <= allowed


@pytest.mark.parametrize("origin", ["https://shop.example", None])
def test_every_tracking_response_carries_allow_origin(live: Server,
                                                      origin: str | None) -> None:
    headers = {"Origin": origin} if origin else {}
    expected = {"*", origin} if origin else {"*"}
    answers = [
        post(live, "/v1/t", {"userId": "u", "event": "E"}, headers=headers),
        post(live, "/v1/b", {"batch": [{"type": "track", "userId": "u", "event": "E"}]},
             headers=headers),
        post(live, "/v1/i", {"userId": "u"}, key=None, headers=headers),  # 401
        post(live, "/v1/track", b"nope", headers=headers),  # 400
        post(live, "/v1/track", b"x" * 40000, headers=headers),  # 413
        post(live, "/v1/m", {"series": []}, headers=headers),
        httpx.get(live.url + "/v1/projects/wk_web/settings", headers=headers),
    ]
    assert [a.status_code for a in answers] == [200, 200, 401, 400, 413, 200, 200]
    for answer in answers:
        assert answer.headers.get("access-control-allow-origin") in expected


# -- the write key -------------------------------------------------------------------------

def basic(user_pass: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(user_pass.encode()).decode()}


@pytest.mark.parametrize("path", ["/v1/identify", "/v1/batch"])
@pytest.mark.parametrize("how", ["body", "basic-colon", "basic-no-colon", "basic-lowercase",
                                 "body-beats-bearer", "body-beats-unknown-basic"])
def test_the_write_key_is_taken_from_the_body_or_basic_auth(live: Server, path: str,
                                                            how: str) -> None:
    message_id = new_id()
    message = {"type": "identify", "userId": "u", "messageId": message_id}
    body: dict[str, Any] = dict(message) if path == "/v1/identify" else {"batch": [message]}
    headers: dict[str, str] = {}
    if how.startswith("body"):
        body["writeKey"] = "wk_backend_2"
    if how == "basic-colon":
        headers = basic("wk_backend_2:")
    elif how == "basic-no-colon":
        headers = basic("wk_backend_2")
    elif how == "basic-lowercase":
        headers = {"Authorization": basic("wk_backend_2:")["Authorization"].replace(
            "Basic", "basic")}
    elif how == "body-beats-bearer":
        headers = {"Authorization": "Bearer some-oauth-token"}
    elif how == "body-beats-unknown-basic":
        headers = basic("wk_nope:")
    response = post(live, path, body, key=None, headers=headers)
    assert response.status_code == 200, response.text
    from trackd.log.reader import LogReader

    reader = LogReader(live.data_dir / "log")
    try:
        [record] = reader.find(message_id)
    finally:
        reader.close()
    assert record.source == "backend"
    assert "writeKey" not in json.loads(record.body)


def test_messages_are_stored_under_the_source_of_their_key(live: Server) -> None:
    ids = {key: new_id() for key in ("wk_web", "wk_backend", "wk_backend_2")}
    for key, message_id in ids.items():
        assert post(live, "/v1/track", {"userId": "u", "event": "E", "messageId": message_id},
                    key=key).status_code == 200
    from trackd.log.reader import LogReader

    reader = LogReader(live.data_dir / "log")
    try:
        sources = {key: reader.find(mid)[0].source for key, mid in ids.items()}
    finally:
        reader.close()
    assert sources == {"wk_web": "web", "wk_backend": "backend", "wk_backend_2": "backend"}
    assert stored(live, "never-sent") == []
