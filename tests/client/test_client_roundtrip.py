"""trackd.client against a real trackd server: messages arrive in the log as sent."""

from __future__ import annotations

import json

from tests.conftest import Server, eventually
from trackd.client import Client
from trackd.log.reader import LogReader


def _stored(server: Server) -> dict[str, dict[str, object]]:
    reader = LogReader(server.data_dir / "log")
    try:
        return {r.message_id: json.loads(r.body) for r in reader.read("t", 100000, position={})}
    finally:
        reader.close()


def test_every_call_round_trips_into_the_log(server: Server) -> None:
    errors: list[object] = []
    client = Client("wk_web", host=server.url, gzip=True,
                    on_error=lambda exc, batch: errors.append(exc))
    client.identify("u1", {"email": "a@example.com"}, message_id="rt-identify")
    client.track("u1", "Product Purchased", {"price": 99.99, "currency": "USD"},
                 message_id="rt-track")
    client.page("u1", "Docs", "Home", {"url": "http://example.com"}, message_id="rt-page")
    client.screen("u1", "App", "Settings", message_id="rt-screen")
    client.group("u1", "g1", {"name": "Initech"}, message_id="rt-group")
    client.alias("anon-1", "u1", message_id="rt-alias")
    client.flush()
    client.shutdown()
    assert errors == []
    stored = eventually(lambda: (s := _stored(server)) and len(s) >= 6 and s)
    track = stored["rt-track"]
    assert track["type"] == "track"
    assert track["event"] == "Product Purchased"
    assert track["properties"] == {"price": 99.99, "currency": "USD"}
    assert track["userId"] == "u1"
    assert track["context"]["library"]["name"] == "trackd-python"
    assert "receivedAt" in track and "writeKey" not in track
    assert stored["rt-group"]["groupId"] == "g1"
    assert stored["rt-alias"]["previousId"] == "anon-1"
    assert stored["rt-page"]["name"] == "Home"


def test_client_events_land_in_the_warehouse(server: Server) -> None:
    client = Client("wk_web", host=server.url)
    client.track("u7", "Product Purchased", {"price": 12.5, "sku": "A-1"}, message_id="wh-track")
    client.identify("u7", {"plan": "pro"}, message_id="wh-identify")
    client.shutdown()

    def rows() -> list[dict[str, object]]:
        with server.client() as http:
            answer = http.post("/api/v1/query", headers={
                "Authorization": "Bearer test-admin-token"}, json={"sql": (
                    "SELECT p.id, p.price, p.sku, u.plan FROM web.product_purchased p "
                    "JOIN web.users u ON u.id = p.user_id")})
        return list(answer.json().get("rows", [])) if answer.status_code == 200 else []

    assert eventually(rows) == [{"id": "wh-track", "price": 12.5, "sku": "A-1", "plan": "pro"}]


def test_server_refusal_reaches_on_error_not_the_app(server: Server) -> None:
    errors: list[Exception] = []
    client = Client("wk_unknown", host=server.url, max_retries=1,
                    on_error=lambda exc, batch: errors.append(exc))
    client.track("u1", "Anything")
    client.flush()
    client.shutdown()
    assert len(errors) == 1
    assert "Invalid write key" in str(errors[0])
