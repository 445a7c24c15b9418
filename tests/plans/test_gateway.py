"""Real SDK traffic (analytics-python) against tracking plans that flag, block and omit.

One server, four sources: `web` flags every violation, `app` blocks every one, `lean` omits
them, `free` has no plan. Each violation kind is checked with its JSON path and action, in
the log (what was stored or refused), the quarantine, the warehouse's `<source>._violations`
and the metrics.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from segment.analytics import Client

from tests.conftest import Server, eventually
from tests.gateway.helpers import ADMIN_TOKEN, quarantined, running_server, stored, stored_one
from tests.plans.plans import CONFIG, shop_plan, write_plans

GOOD = {"order_id": "o-1", "revenue": 10.5, "currency": "USD"}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("plans")
    write_plans(root)
    with running_server(root / "data", CONFIG) as server:
        yield server


def send(server: Server, key: str, calls: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Make the calls with analytics-python, flush; the messageIds in order."""
    errors: list[Exception] = []
    client = Client(key, host=server.url, upload_interval=0.05, max_retries=0,
                    on_error=lambda error, batch: errors.append(error))
    ids = []
    for method, kwargs in calls:
        ok, message = getattr(client, method)(**kwargs)
        assert ok
        ids.append(message["messageId"])
    client.flush()
    client.join()
    return ids


def query(server: Server, sql: str) -> list[dict[str, Any]]:
    response = httpx.post(server.url + "/api/v1/query", json={"sql": sql}, timeout=30,
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["rows"]
    return rows


def violations_of(server: Server, source: str, message_id: str,
                  count: int) -> list[dict[str, Any]]:
    """The warehouse's violation rows of one message, once `count` have been loaded."""
    sql = (f"SELECT * FROM {source}._violations WHERE message_id = '{message_id}' "
           "ORDER BY path")

    def loaded() -> list[dict[str, Any]] | None:
        try:
            rows = query(server, sql)
        except AssertionError:  # the table is not there yet
            return None
        return rows if len(rows) >= count else None

    rows: list[dict[str, Any]] = eventually(loaded)
    assert len(rows) == count, rows
    return rows


def brief(rows: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(r["violation"], r["path"], r["action"]) for r in rows}


def test_flagged_messages_are_stored_as_sent_and_their_violations_recorded(
        live: Server) -> None:
    bad = {"revenue": "12", "currency": "JPY", "coupon": "WINTER",
           "products": [{"sku": "a", "color": "red"}]}
    ok, wrong, unplanned, traits = send(live, "wk_web", [
        ("track", {"user_id": "u1", "event": "Order Completed", "properties": GOOD}),
        ("track", {"user_id": "u1", "event": "Order Completed", "properties": bad}),
        ("track", {"user_id": "u1", "event": "Cart Viewed", "properties": {"items": 2}}),
        ("identify", {"user_id": "u1", "traits": {"email": "nope", "plan": "pro", "age": 3}}),
    ])
    assert stored_one(live, wrong)["properties"] == bad  # stored as sent
    assert stored_one(live, unplanned)["event"] == "Cart Viewed"
    rows = violations_of(live, "web", wrong, 5)
    assert brief(rows) == {
        ("required_missing", "properties.order_id", "flag"),
        ("type_mismatch", "properties.revenue", "flag"),
        ("value_invalid", "properties.currency", "flag"),
        ("unplanned_property", "properties.coupon", "flag"),
        ("unplanned_property", "properties.products[0].color", "flag")}
    by_path = {r["path"]: r for r in rows}
    revenue = by_path["properties.revenue"]
    assert (revenue["rule"], revenue["type"], revenue["event"], revenue["plan_version"]) == (
        'type: "number"', "track", "Order Completed", 3)
    assert revenue["message"] == '"12" is not of type "number"'
    assert by_path["properties.currency"]["rule"] == 'enum: ["USD", "EUR", "GBP"]'
    assert revenue["received_at"] is not None
    [event] = violations_of(live, "web", unplanned, 1)
    assert (event["violation"], event["path"], event["event"]) == (
        "unplanned_event", "event", "Cart Viewed")
    assert brief(violations_of(live, "web", traits, 2)) == {
        ("value_invalid", "traits.email", "flag"), ("unplanned_property", "traits.age", "flag")}
    assert query(live, f"SELECT count(*) AS n FROM web._violations WHERE message_id = '{ok}'"
                 ) == [{"n": 0}]
    assert eventually(lambda: query(live, f"SELECT count(*) AS n FROM web.tracks WHERE "
                                    f"id IN ('{ok}', '{wrong}', '{unplanned}')")[0]["n"] == 3)


def test_blocked_messages_are_refused_and_kept_in_the_quarantine(live: Server) -> None:
    calls: dict[str, tuple[str, dict[str, Any]]] = {
        "ok": ("track", {"user_id": "u2", "event": "Order Completed", "properties": GOOD}),
        "unplanned_event": ("track", {"user_id": "u2", "event": "Cart Viewed"}),
        "unplanned_property": ("track", {"user_id": "u2", "event": "Order Completed",
                                         "properties": {**GOOD, "coupon": "X"}}),
        "required_missing": ("track", {"user_id": "u2", "event": "Order Completed",
                                       "properties": {"revenue": 3}}),
        "type_mismatch": ("track", {"user_id": "u2", "event": "Order Completed",
                                    "properties": {**GOOD, "revenue": "3"}}),
        "value_invalid": ("track", {"user_id": "u2", "event": "Order Completed",
                                    "properties": {**GOOD, "revenue": -1}}),
    }
    paths = {"unplanned_event": "event", "unplanned_property": "properties.coupon",
             "required_missing": "properties.order_id", "type_mismatch": "properties.revenue",
             "value_invalid": "properties.revenue"}
    ids = dict(zip(calls, send(live, "wk_app", list(calls.values())), strict=True))
    stored_one(live, ids["ok"])
    for kind, path in paths.items():
        assert stored(live, ids[kind]) == [], kind
        [kept] = quarantined(live, ids[kind])
        assert (kept["source"], kept["reason"]) == ("app", f"tracking plan: {kind} at {path}")
        assert json.loads(str(kept["body"]))["messageId"] == ids[kind]  # as sent
        [row] = violations_of(live, "app", ids[kind], 1)
        assert (row["violation"], row["path"], row["action"]) == (kind, path, "block")


def test_a_blocked_single_message_gets_the_refusal_answer(live: Server) -> None:
    response = httpx.post(live.url + "/v1/track", auth=("wk_app", ""), timeout=30, json={
        "userId": "u", "event": "Order Completed", "messageId": "blocked-single",
        "properties": {**GOOD, "currency": "JPY"}})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "type": "validation_error",
        "message": "tracking plan: value_invalid at properties.currency"}
    assert quarantined(live, "blocked-single")


def test_omit_removes_exactly_the_offending_properties(live: Server) -> None:
    sent = {"order_id": "o-9", "revenue": 5, "currency": "JPY", "coupon": "X",
            "products": [{"sku": "a", "price": 2, "color": "red"}, {"sku": 7}]}
    omitted, missing = send(live, "wk_lean", [
        ("track", {"user_id": "u3", "event": "Order Completed", "properties": sent}),
        ("track", {"user_id": "u3", "event": "Order Completed", "properties": {"revenue": 1}}),
    ])
    assert stored_one(live, omitted)["properties"] == {
        "order_id": "o-9", "revenue": 5, "products": [{"sku": "a", "price": 2}, {}]}
    assert brief(violations_of(live, "lean", omitted, 4)) == {
        ("value_invalid", "properties.currency", "omit"),
        ("unplanned_property", "properties.coupon", "omit"),
        ("unplanned_property", "properties.products[0].color", "omit"),
        ("type_mismatch", "properties.products[1].sku", "omit")}
    # nothing to remove for a missing property: stored, and recorded as flagged
    assert stored_one(live, missing)["properties"] == {"revenue": 1}
    assert brief(violations_of(live, "lean", missing, 1)) == {
        ("required_missing", "properties.order_id", "flag")}


def test_a_source_without_a_plan_is_not_checked(live: Server) -> None:
    [free] = send(live, "wk_free", [("track", {"user_id": "u", "event": "Anything",
                                               "properties": {"revenue": "x"}})])
    assert stored_one(live, free)["properties"] == {"revenue": "x"}


def test_violations_are_counted_in_the_metrics(live: Server) -> None:
    send(live, "wk_app", [("track", {"user_id": "u4", "event": "Nope"})])

    def counted() -> bool:
        text = httpx.get(live.url + "/metrics", timeout=30).text
        return ('trackd_plan_violations_total{source="app",violation="unplanned_event",'
                'action="block"}' in text)

    eventually(counted)


def test_a_broken_plan_stops_the_server_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "plans").mkdir()
    for name in ("web", "app", "lean"):
        (tmp_path / "plans" / f"{name}.yaml").write_text(shop_plan())
    (tmp_path / "plans" / "app.yaml").write_text(shop_plan(violations="drop"))
    server = Server(tmp_path / "data", CONFIG)
    with pytest.raises(AssertionError, match="trackd exited"):
        server.start(timeout=30)
    lines = server.output.read_text().strip().splitlines()
    assert lines[-1].endswith(
        "plans/app.yaml:6: controls.violations: unknown value 'drop': use one of flag, omit, "
        "block"), lines
    assert "Traceback" not in server.output.read_text()


def test_plan_infer_reads_what_the_warehouse_has_seen(live: Server, tmp_path: Path) -> None:
    calls: list[tuple[str, dict[str, Any]]] = [
        ("track", {"user_id": f"u{i}", "event": "Song Played",
                   "properties": {"title": f"t{i}", "seconds": 30 + i, "genre": "jazz"}})
        for i in range(4)]
    calls.append(("identify", {"user_id": "u1", "traits": {"email": "u1@example.com"}}))
    ids = send(live, "wk_free", calls)

    def loaded() -> list[dict[str, Any]] | None:
        rows = query(live, "SELECT message_id, body FROM _trackd.events WHERE source = 'free'")
        return rows if set(ids) <= {row["message_id"] for row in rows} else None

    bodies = eventually(loaded)  # with those of the other tests that sent to `free`
    messages = tmp_path / "seen.jsonl"
    messages.write_text("".join(row["body"] + "\n" for row in bodies))
    plan = tmp_path / "free.yaml"
    result = live.run_cli("plan", "infer", "--source", "free", "--since", "1h", "-o", str(plan))
    assert result.stderr.startswith(
        f"wrote {plan} ({len(bodies)} messages of source free since 1h ago")
    text = plan.read_text()
    assert "Song Played:" in text and "seconds:\n          type: integer" in text
    assert live.run_cli("plan", "lint", str(plan)).returncode == 0
    tested = subprocess.run([sys.executable, "-m", "trackd", "plan", "test", str(plan),
                             str(messages)], capture_output=True, text=True, timeout=60)
    assert tested.stdout == (f"{len(bodies)} messages checked against plan free version 1: "
                             "all keep it\n")
    assert tested.returncode == 0


def test_plan_lint_without_files_checks_the_configured_plans(live: Server) -> None:
    out = live.run_cli("plan", "lint").stdout.splitlines()
    assert [line.split("/")[-1] for line in out] == [
        f"{name}.yaml: ok (plan shop, version 3, 2 events)" for name in ("web", "app", "lean")]
