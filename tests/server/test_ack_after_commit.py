"""No 200 leaves before the log's commit: the test holds the shard's write lock itself, so the
writer's commit cannot complete, and watches the connection for an early answer.

The writer waits for a lock up to its busy timeout (30 s) and then fails the commit: the
request is then answered 503, never 200.
"""

from __future__ import annotations

import http.client
import json
import select
from collections.abc import Callable
from contextlib import AbstractContextManager

import httpx
import pytest

from tests.conftest import Server
from tests.gateway.helpers import GATEWAY_CONFIG, new_id, post, stored
from tests.log.test_writer_edges import write_locked as shard_write_locked

BUSY_TIMEOUT = 30.0  # trackd.log.shard.connect: PRAGMA busy_timeout=30000


def write_locked(server: Server) -> AbstractContextManager[None]:
    """Hold the write lock of the worker's shard (what a commit needs) for the block."""
    return shard_write_locked(server.data_dir / "log" / "gw0.log.db")


def send(server: Server, message_id: str) -> http.client.HTTPConnection:
    """Send one track request; the answer is left unread on the returned connection."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=BUSY_TIMEOUT + 30)
    body = json.dumps({"userId": "u", "event": "Held", "messageId": message_id})
    conn.request("POST", "/v1/track", body=body, headers={
        "Content-Type": "application/json", "Authorization": "Basic d2tfd2ViOg=="})  # wk_web:
    return conn


def answered_within(conn: http.client.HTTPConnection, seconds: float) -> bool:
    assert conn.sock is not None
    readable, _, _ = select.select([conn.sock], [], [], seconds)
    return bool(readable)


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    """One worker whose shard exists and whose writer has committed once."""
    started = make_server(config=GATEWAY_CONFIG)
    assert post(started, "/v1/track", {"userId": "u", "event": "Warm"}).status_code == 200
    return started


def test_no_200_leaves_before_the_commit_completes(server: Server) -> None:
    message_id = new_id("held")
    with write_locked(server):
        conn = send(server, message_id)
        # The worker has taken the request in: a later request on another connection is
        # answered (one event loop; an ack that did not wait for the commit would go first).
        assert httpx.get(server.url + "/healthz", timeout=30).status_code == 200
        assert not answered_within(conn, 1.0), "answered while its commit could not complete"
        assert stored(server, message_id) == []
    response = conn.getresponse()  # the lock is released: the commit completes, then the 200
    assert (response.status, json.loads(response.read())) == (200, {"success": True})
    conn.close()
    assert [m["event"] for m in stored(server, message_id)] == ["Held"]


@pytest.mark.slow
def test_a_commit_that_cannot_get_the_lock_is_a_503_never_a_200(server: Server) -> None:
    message_id = new_id("busy")
    with write_locked(server):
        conn = send(server, message_id)
        response = conn.getresponse()  # after the writer's busy timeout, lock still held
        status, doc = response.status, json.loads(response.read())
        conn.close()
    assert status == 503, doc
    assert response.getheader("retry-after")
    assert stored(server, message_id) == []
    after = new_id("after")  # the writer recovers once the lock is free
    assert post(server, "/v1/track", {"userId": "u", "event": "After",
                                      "messageId": after}).status_code == 200
