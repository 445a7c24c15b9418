"""End to end through `trackd serve`: destinations, the archive, lookup and replay."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import duckdb
import httpx

from tests.conftest import Server, eventually
from tests.destinations.receiver import Receiver

MakeServer = Callable[..., Server]


def config(*destinations: str, archive: str = "flush_interval = 0.2") -> str:
    return f"""
[server]
admin_token = "test-admin-token"

[[sources]]
name = "web"
write_keys = ["wk_web"]

[archive]
{archive}
""" + "\n".join(destinations)


def webhook(name: str, url: str, extra: str = "") -> str:
    return f"""
[[destinations]]
name = "{name}"
url = "{url}"
backoff_min = 0.05
backoff_max = 0.2
poll_interval = 0.05
{extra}
"""


def track(server: Server, messages: list[dict[str, Any]], key: str = "wk_web") -> list[str]:
    for m in messages:
        m.setdefault("messageId", f"e2e-{uuid.uuid4()}")
        m.setdefault("type", "track")
        m.setdefault("event", "Clicked")
    response = httpx.post(server.url + "/v1/batch", json={"batch": messages},
                          auth=(key, ""), timeout=30)
    assert response.status_code == 200, response.text
    return [m["messageId"] for m in messages]


def show(server: Server, message_id: str) -> dict[str, Any]:
    # exit 1: not found
    result = server.run_cli("events", "show", message_id, "--format", "json", check=False)
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_a_webhook_receives_what_the_server_accepts_and_lookup_says_so(
        make_server: MakeServer, receiver: Receiver) -> None:
    server = make_server(config(webhook("hook", receiver.url + "/in", 'secret = "s"')))
    sent = track(server, [{"userId": "u1", "properties": {"n": n}} for n in range(5)])
    eventually(lambda: receiver.accepted_ids() == sent)
    assert all(r.headers["x-trackd-signature"].startswith("sha256=")
               for r in receiver.requests)
    answer = eventually(lambda: (doc := show(server, sent[0]))["destinations"]["deliveries"]
                        and doc)
    [entry] = answer["destinations"]["deliveries"]
    assert (entry["destination"], entry["state"], entry["status"]) == ("hook", "delivered", 200)
    eventually(lambda: 'trackd_destination_delivered_total{destination="hook"} 5'
               in httpx.get(server.url + "/metrics", timeout=10).text)


def test_a_dead_destination_does_not_hold_back_a_healthy_one(
        make_server: MakeServer, make_receiver: Callable[[], Receiver]) -> None:
    healthy, dead = make_receiver(), make_receiver()
    dead.reply(hang=True)
    server = make_server(config(webhook("healthy", healthy.url),
                                webhook("dead", dead.url, "timeout = 30.0")))
    sent = track(server, [{"userId": f"u{n % 7}", "properties": {"n": n}} for n in range(40)])
    eventually(lambda: sorted(healthy.accepted_ids()) == sorted(sent))
    assert dead.accepted() == []


def test_forwarding_to_a_second_trackd_lands_in_its_log_and_warehouse(
        make_server: MakeServer) -> None:
    second = make_server("""
[server]
admin_token = "second-admin-token"

[[sources]]
name = "forwarded"
write_keys = ["wk_forwarded"]
""", name="second")
    first = make_server(config(f"""
[[destinations]]
name = "fwd"
type = "segment"
url = "{second.url}"
write_key = "wk_forwarded"
batch_size = 50
"""))
    sent = track(first, [{"userId": "u1", "properties": {"n": n}} for n in range(3)])
    for mid in sent:
        eventually(lambda mid=mid: show(second, mid)["accepted"])  # type: ignore[misc]
    eventually(lambda: '"n": 3' in second.run_cli(
        "query", "SELECT count(*) AS n FROM forwarded.tracks", "--format", "json").stdout)


def test_the_archive_is_readable_by_duckdb_and_replay_resends_it(
        make_server: MakeServer, receiver: Receiver) -> None:
    server = make_server(config(webhook("hook", receiver.url)))
    sent = track(server, [{"userId": "u1", "properties": {"n": n}} for n in range(3)])
    eventually(lambda: len(receiver.accepted()) == 3)
    glob = str(server.data_dir / "archive" / "**" / "*.parquet")

    def archived() -> list[tuple[Any, ...]]:
        try:
            with duckdb.connect() as conn:
                return conn.execute(
                    f"SELECT source, message_id FROM read_parquet('{glob}', "
                    "hive_partitioning = true) ORDER BY received_at").fetchall()
        except duckdb.IOException:
            return []

    eventually(lambda: len(archived()) == 3)
    assert archived() == [("web", mid) for mid in sent]
    result = server.run_cli("replay", "--destination", "hook")
    assert "Replayed 3 messages to hook: 3 delivered" in result.stdout
    replayed = receiver.accepted()[3:]
    assert [m["messageId"] for m in replayed] == sent
    assert all(m["integrations"] == {"All": False, "hook": True} for m in replayed)


def test_events_show_reports_deliveries_without_a_server(
        make_server: MakeServer, receiver: Receiver) -> None:
    server = make_server(config(webhook("hook", receiver.url)))
    [mid] = track(server, [{"userId": "u1"}])
    eventually(lambda: show(server, mid)["destinations"]["deliveries"][0]["state"]
               == "delivered")
    server.stop()
    [entry] = show(server, mid)["destinations"]["deliveries"]
    assert entry["state"] == "delivered"
