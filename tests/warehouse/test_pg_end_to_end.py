"""A real `trackd serve` with `[warehouse] url` on the machine's PostgreSQL: real
segment-analytics-python traffic lands in PostgreSQL rows with Segment's columns and the
contract's types; the query API, `trackd query`, `trackd events show` and the Profile API read
it, and the query API cannot write."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from tests.conftest import DEFAULT_CONFIG, Server, eventually
from tests.warehouse import pg
from tests.warehouse.test_end_to_end import ADMIN, count, sdk, sql


@pytest.fixture
def pg_server(make_server: Callable[..., Server]) -> Iterator[tuple[Server, str]]:
    with pg.database() as url:
        server = make_server(DEFAULT_CONFIG + f'\n[warehouse]\nurl = "{url}"\n')
        yield server, url
        server.stop()


def test_sdk_traffic_lands_in_postgresql_with_columns_types_and_values(
        pg_server: tuple[Server, str]) -> None:
    server, url = pg_server
    with sdk(server) as client:
        client.track("user-1", "Order Completed", {
            "revenue": 19.99, "quantity": 2, "coupon": "SPRING", "gift": False,
            "shippedAt": datetime(2024, 5, 2, 8, 30, tzinfo=UTC),
            "product": {"sku": "SKU-1"}, "tags": ["new", "sale"]}, message_id="pg-track-1")
        client.track("user-1", "Order Completed", {"revenue": 1}, message_id="pg-track-1")
        client.identify("user-1", {"email": "ann@example.com", "plan": "free", "logins": 1})
        client.identify("user-1", {"plan": "pro", "logins": None})
        client.page("user-1", "Docs", "Install", {"title": "Install trackd"})
        client.group("user-1", "acme", {"name": "Acme", "employees": 50})
        client.track("user-1", "Order Completed", {"revenue": "a lot"})
    eventually(lambda: count(server, "web.order_completed") == 2
               and count(server, "web.users") == 1 and count(server, "web.accounts") == 1
               and count(server, "web.pages") == 1)
    with psycopg.connect(url) as con:
        types: dict[str, str] = dict(con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'web' AND table_name = 'order_completed'").fetchall())
        users = con.execute("SELECT id, email, plan, logins FROM web.users").fetchall()
        conflict = con.execute("SELECT revenue, _type_conflicts FROM web.order_completed "
                               "WHERE id <> 'pg-track-1'").fetchall()
    assert {k: types[k] for k in ("id", "received_at", "revenue", "quantity", "coupon", "gift",
                                  "shipped_at", "product_sku", "tags", "_type_conflicts",
                                  "context_ip", "context_page_url", "context_campaign_name")} \
        == {"id": "text", "received_at": "timestamp with time zone",
            "revenue": "double precision", "quantity": "bigint", "coupon": "text",
            "gift": "boolean", "shipped_at": "timestamp with time zone", "product_sku": "text",
            "tags": "text", "_type_conflicts": "jsonb", "context_ip": "text",
            "context_page_url": "text", "context_campaign_name": "text"}
    assert users == [("user-1", "ann@example.com", "pro", None)]
    assert conflict == [(None, {"revenue": "a lot"})]
    first = sql(server, "SELECT revenue, quantity, coupon, gift, product_sku, tags, "
                        "context_library_name FROM web.order_completed WHERE id = 'pg-track-1'")
    assert first == [{"revenue": 19.99, "quantity": 2, "coupon": "SPRING", "gift": False,
                      "product_sku": "SKU-1", "tags": '["new","sale"]',
                      "context_library_name": "analytics-python"}]
    assert count(server, "web.tracks") == 2  # the repeated messageId loaded once

    out = server.run_cli("query", "SELECT id, coupon FROM web.order_completed "
                         "WHERE id = 'pg-track-1'", "--format", "csv").stdout
    assert out.splitlines() == ["id,coupon", "pg-track-1,SPRING"]
    shown = json.loads(server.run_cli("events", "show", "pg-track-1", "--format", "json").stdout)
    assert {(x["schema"], x["table"]) for x in shown["warehouse"]["loaded"]} == {
        ("web", "tracks"), ("web", "order_completed")}
    assert len(shown["warehouse"]["duplicates"]) == 1

    base = "/v1/spaces/spa_1/collections"
    with server.client() as http:
        traits = http.get(f"{base}/users/profiles/user_id:user-1/traits",
                          auth=("test-admin-token", ""))
        assert traits.status_code == 200
        assert traits.json()["traits"] == {"email": "ann@example.com", "plan": "pro",
                                           "logins": None}
        account = http.get(f"{base}/accounts/profiles/group_id:acme/traits",
                           auth=("test-admin-token", ""))
        assert account.json()["traits"] == {"name": "Acme", "employees": 50}
        events = http.get(f"{base}/users/profiles/user_id:user-1/events",
                          auth=("test-admin-token", ""), params={"limit": 100}).json()["data"]
        assert sorted((e["type"], e["event"]) for e in events) == [
            ("group", None), ("identify", None), ("identify", None), ("page", "Install"),
            ("track", "Order Completed"), ("track", "Order Completed")]
        ids = http.get(f"{base}/users/profiles/user_id:user-1/external_ids",
                       auth=("test-admin-token", "")).json()["data"]
        assert sorted((x["type"], x["id"]) for x in ids) == [
            ("email", "ann@example.com"), ("user_id", "user-1")]
        for statement in ["DELETE FROM web.users", "COMMIT; DELETE FROM web.users",
                          "SET TRANSACTION READ WRITE; DELETE FROM web.users",
                          "SELECT 1; DROP TABLE web.users"]:
            refused = http.post("/api/v1/query", json={"sql": statement}, headers=ADMIN)
            assert refused.status_code == 400, statement
    assert count(server, "web.users") == 1

    server.stop()  # and without a server: the commands read PostgreSQL themselves
    out = server.run_cli("query", "SELECT count(*) AS n FROM web.tracks", "--format",
                         "json").stdout
    assert json.loads(out) == [{"n": 2}]
    result = server.run_cli("query", "COMMIT; DELETE FROM web.tracks", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    shown = json.loads(server.run_cli("events", "show", "pg-track-1", "--format", "json").stdout)
    assert len(shown["warehouse"]["loaded"]) == 2


def test_a_server_that_cannot_reach_its_postgresql_says_so_in_one_line(
        make_server: Callable[..., Server]) -> None:
    server = make_server(DEFAULT_CONFIG + '\n[warehouse]\nurl = "postgresql://postgres@'
                         '127.0.0.1:5432/trackd_no_such_database"\n', start=False)
    with pytest.raises(AssertionError) as failed:
        server.start(timeout=30)
    assert "the PostgreSQL warehouse database does not exist" in str(failed.value)
    assert "Traceback" not in str(failed.value)
