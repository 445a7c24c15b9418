"""A real `trackd serve`, real segment-analytics-python traffic, the warehouse read back."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

from segment.analytics import Client
from segment.analytics import request as segment_request

from tests.conftest import Server, eventually

ADMIN = {"Authorization": "Bearer test-admin-token"}


def metrics(server: Server) -> str:
    with server.client() as client:
        return client.get("/metrics").text


def sql(server: Server, query: str) -> list[dict[str, Any]]:
    with server.client() as client:
        response = client.post("/api/v1/query", json={"sql": query}, headers=ADMIN)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["rows"]
    return rows


def count(server: Server, table: str) -> int:
    with server.client() as client:
        response = client.post("/api/v1/query", headers=ADMIN,
                               json={"sql": f"SELECT count(*) AS n FROM {table}"})
    return int(response.json()["rows"][0]["n"]) if response.status_code == 200 else -1


@contextlib.contextmanager
def sdk(server: Server, write_key: str = "wk_web") -> Iterator[Client]:
    """A real analytics-python client; on exit it flushes, shuts down and must have no errors."""
    errors: list[Any] = []
    client = Client(write_key, host=server.url, upload_interval=0.05, max_retries=2,
                    on_error=lambda error, items: errors.append(error))
    try:
        yield client
        client.flush()
    finally:
        client.shutdown()
        segment_request._session.close()  # its pooled sockets, before the server goes away
    assert errors == []


def test_sdk_traffic_lands_in_duckdb_with_columns_types_and_values(server: Server) -> None:
    shipped = datetime(2024, 5, 2, 8, 30, tzinfo=UTC)
    with sdk(server) as client:
        client.track("user-1", "Order Completed", {
            "revenue": 19.99, "quantity": 2, "coupon": "SPRING", "gift": False,
            "shippedAt": shipped, "product": {"sku": "SKU-1", "price": 9.5},
            "tags": ["new", "sale"]}, message_id="e2e-track-1")
        client.identify("user-1", {"email": "ann@example.com", "plan": "free", "logins": 1})
        client.identify("user-1", {"plan": "pro", "logins": None})
        client.page("user-1", "Docs", "Install", {"title": "Install trackd"})
        client.screen("user-1", "Onboarding", "Welcome")
        client.group("user-1", "acme", {"name": "Acme", "employees": 50})
        client.alias("user-1-old", "user-1")
        client.track("user-1", "Order Completed", {"revenue": "a lot"})  # a type conflict

    eventually(lambda: count(server, "web.order_completed") == 2
               and count(server, "web.aliases") == 1 and count(server, "web.users") == 1)
    types = {r["column_name"]: r["data_type"] for r in sql(
        server, "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'web' AND table_name = 'order_completed'")}
    assert {k: types[k] for k in (
        "id", "user_id", "received_at", "sent_at", "timestamp", "original_timestamp",
        "uuid_ts", "event", "event_text", "context_ip", "context_library_name",
        "context_library_version", "revenue", "quantity", "coupon", "gift", "shipped_at",
        "product_sku", "product_price", "tags", "_type_conflicts")} == {
        "id": "VARCHAR", "user_id": "VARCHAR", "received_at": "TIMESTAMP",
        "sent_at": "TIMESTAMP", "timestamp": "TIMESTAMP", "original_timestamp": "TIMESTAMP",
        "uuid_ts": "TIMESTAMP", "event": "VARCHAR", "event_text": "VARCHAR",
        "context_ip": "VARCHAR", "context_library_name": "VARCHAR",
        "context_library_version": "VARCHAR", "revenue": "DOUBLE", "quantity": "BIGINT",
        "coupon": "VARCHAR", "gift": "BOOLEAN", "shipped_at": "TIMESTAMP",
        "product_sku": "VARCHAR", "product_price": "DOUBLE", "tags": "VARCHAR",
        "_type_conflicts": "JSON"}
    first = sql(server, "SELECT * FROM web.order_completed WHERE id = 'e2e-track-1'")[0]
    assert first["event"] == "order_completed" and first["event_text"] == "Order Completed"
    assert (first["revenue"], first["quantity"], first["coupon"], first["gift"]) == (
        19.99, 2, "SPRING", False)
    assert first["shipped_at"].startswith("2024-05-02T08:30:00")
    assert (first["product_sku"], first["product_price"]) == ("SKU-1", 9.5)
    assert json.loads(first["tags"]) == ["new", "sale"]
    assert first["context_library_name"] == "analytics-python"
    assert first["context_ip"] == "127.0.0.1"
    assert first["_type_conflicts"] is None
    conflict = sql(server, "SELECT revenue, _type_conflicts FROM web.order_completed "
                           "WHERE id <> 'e2e-track-1'")[0]
    assert conflict["revenue"] is None
    assert json.loads(conflict["_type_conflicts"]) == {"revenue": "a lot"}
    assert sql(server, "SELECT id, email, plan, logins FROM web.users") == [
        {"id": "user-1", "email": "ann@example.com", "plan": "pro", "logins": None}]
    assert sql(server, "SELECT name, category, title FROM web.pages") == [
        {"name": "Install", "category": "Docs", "title": "Install trackd"}]
    assert sql(server, "SELECT name, category FROM web.screens") == [
        {"name": "Welcome", "category": "Onboarding"}]
    assert sql(server, "SELECT id, name, employees FROM web.accounts") == [
        {"id": "acme", "name": "Acme", "employees": 50}]
    assert sql(server, "SELECT previous_id, user_id FROM web.aliases") == [
        {"previous_id": "user-1-old", "user_id": "user-1"}]
    assert count(server, "web.identifies") == 2 and count(server, "web.tracks") == 2

    # The CLI reads the same warehouse through the running server, in every format.
    out = server.run_cli("query", "SELECT id, revenue FROM web.order_completed "
                         "WHERE id = 'e2e-track-1'", "--format", "json").stdout
    assert json.loads(out) == [{"id": "e2e-track-1", "revenue": 19.99}]
    out = server.run_cli("query", "SELECT id, coupon FROM web.order_completed "
                         "WHERE id = 'e2e-track-1'", "--format", "csv").stdout
    assert out.splitlines() == ["id,coupon", "e2e-track-1,SPRING"]
    shown = json.loads(server.run_cli("events", "show", "e2e-track-1", "--format", "json").stdout)
    assert {(x["schema"], x["table"]) for x in shown["warehouse"]["loaded"]} == {
        ("web", "tracks"), ("web", "order_completed")}


def test_a_repeated_message_id_is_not_loaded_again_after_a_restart(server: Server) -> None:
    with sdk(server) as client:
        client.track("u-d", "Checkout", {"step": 1}, message_id="dedup-me")
    eventually(lambda: count(server, "web.checkout") == 1)
    server.stop()
    server.start()
    with sdk(server) as client:
        client.track("u-d", "Checkout", {"step": 2}, message_id="dedup-me")
        client.track("u-d", "Checkout", {"step": 3}, message_id="fresh-one")
    eventually(lambda: count(server, "web.checkout") == 2)

    def duplicate_seen() -> Any:
        with server.client() as http:
            answer = http.get("/api/v1/events/dedup-me", headers=ADMIN).json()
        return answer["warehouse"]["duplicates"] and answer

    answer = eventually(duplicate_seen)
    (loaded,) = [x for x in answer["warehouse"]["loaded"] if x["table"] == "checkout"]
    assert answer["warehouse"]["duplicates"][0]["duplicateOf"]["loadedAt"] == loaded["loadedAt"]
    assert sql(server, "SELECT id, step FROM web.checkout ORDER BY id") == [
        {"id": "dedup-me", "step": 1}, {"id": "fresh-one", "step": 3}]
    eventually(lambda: 'trackd_warehouse_duplicates_total{source="web"} 1' in metrics(server))
    server.stop()
    # With no server running, the CLI opens the warehouse read-only itself.
    out = server.run_cli("query", "SELECT count(*) AS n FROM web.checkout", "--format", "json")
    assert json.loads(out.stdout) == [{"n": 2}]
    shown = json.loads(server.run_cli("events", "show", "dedup-me", "--format", "json").stdout)
    assert len(shown["warehouse"]["duplicates"]) == 1


def _send_backlog(server: Server, first: int, count_: int) -> None:
    with server.client() as http:
        for start in range(first, first + count_, 500):
            batch = [{"type": "track", "userId": f"u{i % 97}", "event": "Backlog",
                      "messageId": f"bk-{i}", "properties": {"i": i}}
                     for i in range(start, start + 500)]
            response = http.post("/v1/batch", json={"batch": batch}, auth=("wk_web", ""))
            assert response.status_code == 200, response.text


def _loaded_past(server: Server, rows: int) -> int:
    """Rows in web.backlog when there are more than `rows`, else 0."""
    n = count(server, "web.backlog")
    return n if n > rows else 0


def test_kill_9_during_a_backlog_loses_nothing_and_duplicates_nothing(
        make_server: Callable[..., Server]) -> None:
    # Small transactions: a backlog of 3,000 takes 60 of them. The kill comes as soon as the
    # first rows of a backlog show; when the loader was faster still (the kill landed after
    # the backlog), that round tested nothing and another backlog is sent, up to five.
    server = make_server(env={"TRACKD_WAREHOUSE_BATCH_ROWS": "50"})
    total, landed = 0, False
    for _round in range(5):
        before, total = total, total + 3000
        _send_backlog(server, before, 3000)
        at_kill = eventually(partial(_loaded_past, server, before), interval=0.01)
        server.kill()
        server.start()
        landed = at_kill < total
        eventually(partial(_loaded_past, server, total - 1), timeout=60)
        if landed:
            break
    assert landed, "in five rounds the kill never landed while a backlog loaded"
    assert sql(server, "SELECT count(*) AS n, count(DISTINCT id) AS ids, "
                       "count(DISTINCT i) AS distinct_i FROM web.backlog") == [
        {"n": total, "ids": total, "distinct_i": total}]
    assert sql(server, "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM web.tracks") == [
        {"n": total, "ids": total}]
    assert sql(server, "SELECT count(*) AS n FROM _trackd.duplicates") == [{"n": 0}]
    assert sql(server, "SELECT count(*) AS n FROM _trackd.messages") == [{"n": total}]


def test_the_query_api_wants_the_admin_token_and_refuses_writes(server: Server) -> None:
    body = {"sql": "SELECT 1 AS one"}
    with server.client() as http:
        assert http.post("/api/v1/query", json=body).status_code == 401
        assert http.post("/api/v1/query", json=body,
                         headers={"Authorization": "Bearer wk_web"}).status_code == 401
        assert http.post("/api/v1/query", json=body, auth=("wk_web", "")).status_code == 401
        assert http.post("/api/v1/query", json=body,
                         auth=("test-admin-token", "")).status_code == 401
        ok = http.post("/api/v1/query", json=body, headers=ADMIN)
        assert ok.status_code == 200 and ok.json()["rows"] == [{"one": 1}]
        for statement in ["INSERT INTO _trackd.offsets VALUES ('x', 1)",
                          "CREATE TABLE main.t AS SELECT 1",
                          "DELETE FROM _trackd.messages",
                          "ATTACH '/tmp/x.duckdb' AS x",
                          "COPY _trackd.messages TO '/tmp/x.csv'",
                          "PRAGMA version",
                          "SET threads = 1",
                          "INSTALL httpfs",
                          "SELECT 1; DROP TABLE _trackd.messages"]:
            refused = http.post("/api/v1/query", json={"sql": statement}, headers=ADMIN)
            assert refused.status_code == 400, statement
            assert refused.json()["error"]["type"] == "query_error"
    result = server.run_cli("query", "DROP TABLE _trackd.messages", check=False)
    assert result.returncode != 0 and "refused" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_profile_api_stitches_anonymous_history_to_the_user(server: Server) -> None:
    with sdk(server) as client:
        client.page(anonymous_id="anon-7", name="Pricing")
        client.track(anonymous_id="anon-7", event="Plan Viewed", properties={"plan": "pro"})
        client.identify("u-7", {"email": "Seven@Example.com", "name": "Seven"},
                        anonymous_id="anon-7")
        client.identify("u-7", {"plan": "pro", "name": "Seven S."})
        client.track("u-7", "Subscribed", {"plan": "pro"})
        client.track(anonymous_id="anon-other", event="Plan Viewed")
    eventually(lambda: count(server, "web.tracks") == 3 and count(server, "web.identifies") == 2)
    base = "/v1/spaces/spa_1/collections/users/profiles"
    auth = ("test-admin-token", "")
    with server.client() as http:
        traits = http.get(f"{base}/user_id:u-7/traits", auth=auth)
        assert traits.status_code == 200 and "Request-Id" in traits.headers
        assert traits.json()["traits"] == {"email": "Seven@Example.com", "name": "Seven S.",
                                           "plan": "pro"}
        assert traits.json()["cursor"]["has_more"] is False
        by_anon = http.get(f"{base}/anonymous_id:anon-7/traits", auth=auth).json()
        assert by_anon["traits"] == traits.json()["traits"]

        events = http.get(f"{base}/user_id:u-7/events", auth=auth,
                          params={"limit": 100}).json()["data"]
        assert sorted((e["type"], e["event"]) for e in events) == [
            ("identify", None), ("identify", None), ("page", "Pricing"),
            ("track", "Plan Viewed"), ("track", "Subscribed")]
        anonymous = next(e for e in events if e["event"] == "Plan Viewed")
        assert anonymous["properties"] == {"plan": "pro"} and anonymous["source_id"] == "web"
        assert {"collection": "users", "encoding": "none", "id": "anon-7",
                "type": "anonymous_id"} in anonymous["external_ids"]
        only = http.get(f"{base}/user_id:u-7/events", auth=auth,
                        params={"include": "Subscribed"}).json()["data"]
        assert [e["event"] for e in only] == ["Subscribed"]

        ids = http.get(f"{base}/email:seven@example.com/external_ids", auth=auth).json()
        assert sorted((x["type"], x["id"]) for x in ids["data"]) == [
            ("anonymous_id", "anon-7"), ("email", "seven@example.com"), ("user_id", "u-7")]
        assert all(x["collection"] == "users" and x["source_id"] == "web"
                   and x["first_message_id"] and x["created_at"] for x in ids["data"])

        missing = http.get(f"{base}/user_id:nobody/traits", auth=auth)
        assert missing.status_code == 404
        assert missing.json() == {"error": {"code": "not_found",
                                            "message": "Profile was not found."}}
        assert http.get(f"{base}/phone:123/traits", auth=auth).status_code == 400
        assert http.get(f"{base}/user_id:u-7/traits").status_code == 401
        assert http.get(f"{base}/user_id:u-7/traits", auth=("wk_web", "")).status_code == 401
        accounts = http.get("/v1/spaces/spa_1/collections/accounts/profiles/group_id:none/traits",
                            auth=auth)
        assert accounts.status_code == 404
