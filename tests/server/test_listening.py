"""How gateway workers listen: connections opened together reach every worker; one port each."""

from __future__ import annotations

import collections
import http.client
from collections.abc import Callable

import msgspec
import pytest

from tests.conftest import Server, eventually
from tests.gateway.helpers import GATEWAY_CONFIG
from tests.server.load import read_all

CONNECTIONS = 32


def _post_track(conn: http.client.HTTPConnection, message_id: str) -> int:
    """POST one track on `conn` (kept alive); the answer's status."""
    body = msgspec.json.encode({"type": "track", "event": "Spread", "userId": "u1",
                                "messageId": message_id, "writeKey": "wk_web"})
    conn.request("POST", "/v1/track", body, {"Content-Type": "application/json"})
    answer = conn.getresponse()
    answer.read()
    return answer.status


def test_keep_alive_connections_opened_at_once_reach_both_workers(
        make_server: Callable[..., Server]) -> None:
    """A pool of connections opened in one burst (as a proxy or a load test opens them), each
    kept alive: every worker gets a share, so neither sits idle while the other saturates.
    Which worker served a connection shows in the log shard its message went to."""
    server = make_server(config=GATEWAY_CONFIG, workers=2)
    pool = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            for _ in range(CONNECTIONS)]
    try:
        for conn in pool:  # every connection first, in one burst
            conn.connect()
        for n, conn in enumerate(pool):
            assert _post_track(conn, f"spread-{n}") == 200
        for n, conn in enumerate(pool):  # the same connections again: still kept alive
            sock = conn.sock
            assert _post_track(conn, f"again-{n}") == 200
            assert conn.sock is sock, "the server closed a keep-alive connection"
    finally:
        for conn in pool:
            conn.close()

    def shards() -> dict[str, str] | None:
        found = {r.message_id: r.shard for r in read_all(server)
                 if r.message_id.startswith(("spread-", "again-"))}
        return found if len(found) == 2 * CONNECTIONS else None

    found: dict[str, str] = eventually(shards)
    per_worker = collections.Counter(found[f"spread-{n}"] for n in range(CONNECTIONS))
    # Spread by a hash of each connection's addresses: fewer than 4 of 32 on one worker
    # happens about once in 400,000 runs. One shared socket put every connection of a burst
    # on one worker in about 1 run in 10.
    assert set(per_worker) == {"gw0", "gw1"}
    assert min(per_worker.values()) >= 4, per_worker
    # A connection stays with its worker.
    assert all(found[f"again-{n}"] == found[f"spread-{n}"] for n in range(CONNECTIONS))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_second_server_on_a_port_in_use_does_not_start(
        make_server: Callable[..., Server], workers: int) -> None:
    """The workers' sockets share their port with each other, never with another process:
    a second trackd on the same port fails with one clear line instead of taking half of
    the first one's connections."""
    first = make_server(config=GATEWAY_CONFIG, workers=2)
    second = make_server(config=GATEWAY_CONFIG, workers=workers, start=False, name="second")
    second.port = first.port
    with pytest.raises(AssertionError, match=f"cannot listen on 127.0.0.1:{first.port}: "
                                             "Address already in use"):
        second.start()
    with first.client() as client:
        assert client.get("/readyz").status_code == 200
