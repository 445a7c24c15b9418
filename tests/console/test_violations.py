"""Tracking plan violations in the console: the live stream's `violation` events and the
violations page, over real HTTP against a real `trackd serve` with plans that flag (`web`)
and block (`app`)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server, eventually
from tests.console.test_access import login, read_stream
from tests.gateway.helpers import ADMIN_TOKEN, post, running_server
from tests.plans.plans import CONFIG, write_plans
from trackd.console.counts import Counts
from trackd.log import tail as tail_module
from trackd.log.records import Entry, Violation
from trackd.log.tail import Flag, LogTail
from trackd.log.writer import LogWriter

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("console-plans")
    write_plans(root)
    with running_server(root / "data", CONFIG) as server:
        yield server


def order(tag: str, suffix: str, key: str, revenue: object) -> dict[str, Any]:
    return {"type": "track", "userId": tag, "event": "Order Completed", "writeKey": key,
            "messageId": f"{tag}-{suffix}", "properties": {"order_id": "o-1",
                                                          "revenue": revenue}}


def test_the_live_stream_shows_violations_with_their_kind_path_and_message(
        planned: Server) -> None:
    lines: list[str] = []
    reader = threading.Thread(target=read_stream, args=(planned, "status=violation", 4, lines,
                                                        BEARER))
    reader.start()
    eventually(lambda: lines)  # connected
    tag = f"viol-{time.time_ns()}"
    flagged = order(tag, "flag", "wk_web", "12")
    assert post(planned, "/v1/track", flagged, key=None).status_code == 200
    assert post(planned, "/v1/track", order(tag, "ok", "wk_web", 12.5),
                key=None).status_code == 200
    blocked = post(planned, "/v1/track", order(tag, "block", "wk_app", "9"), key=None)
    assert blocked.status_code == 400 and "tracking plan" in blocked.text
    reader.join(30)
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    mine = {e["messageId"]: e for e in events if str(e["messageId"]).startswith(tag)}
    assert set(mine) == {f"{tag}-flag", f"{tag}-block"}  # the valid one is no violation
    flag = mine[f"{tag}-flag"]
    assert (flag["status"], flag["source"], flag["type"]) == ("violation", "web", "track")
    assert (flag["violation"]["kind"], flag["violation"]["path"],
            flag["violation"]["action"]) == ("type_mismatch", "properties.revenue", "flag")
    assert flag["reason"] == 'type_mismatch at properties.revenue: "12" is not of type "number"'
    assert flag["message"]["properties"] == flagged["properties"]  # as stored
    assert "writeKey" not in flag["message"]
    block = mine[f"{tag}-block"]
    assert (block["source"], block["violation"]["action"]) == ("app", "block")
    assert block["message"]["properties"]["revenue"] == "9"
    assert "wk_web" not in "\n".join(lines) and "wk_app" not in "\n".join(lines)


def test_the_violations_page_groups_by_event_and_kind_with_counts_and_samples(
        planned: Server) -> None:
    tag = f"page-{time.time_ns()}"
    for i in range(3):
        assert post(planned, "/v1/track", order(tag, str(i), "wk_web", "x"),
                    key=None).status_code == 200
    unplanned = {"type": "track", "userId": tag, "event": "Cart Viewed", "writeKey": "wk_web",
                 "messageId": f"{tag}-cart"}
    assert post(planned, "/v1/track", unplanned, key=None).status_code == 200

    def groups() -> dict[tuple[str, str], dict[str, Any]] | None:
        response = httpx.get(planned.url + "/api/v1/violations?source=web", headers=BEARER,
                             timeout=30)
        assert response.status_code == 200
        found = {(g["event"], g["kind"]): g for g in response.json()["groups"]}
        cart = found.get(("Cart Viewed", "unplanned_event"))
        samples = found.get(("Order Completed", "type_mismatch"), {}).get("samples", [])
        ok = cart and any(s["messageId"] == f"{tag}-2" for s in samples)
        return found if ok else None

    found = eventually(groups)
    mismatch = found[("Order Completed", "type_mismatch")]
    assert mismatch["counts"]["hour"] >= 3
    assert mismatch["counts"]["hour"] <= mismatch["counts"]["day"] <= mismatch["counts"]["week"]
    assert mismatch["samples"][0]["path"] == "properties.revenue"
    assert found[("Cart Viewed", "unplanned_event")]["counts"]["day"] == 1
    with httpx.Client(base_url=planned.url, timeout=30) as client:
        login(planned, client)
        page = client.get("/console/violations?source=web")
        assert page.status_code == 200
        assert 'href="/console/violations"' in page.text  # in the navigation
        assert "Cart Viewed" in page.text and "unplanned_event" in page.text
        assert f"/console/events/{tag}-2" in page.text  # a sample links to its message
        assert "wk_web" not in page.text
        assert client.get("/console/violations?source=app").status_code == 200


def test_the_tail_hands_each_violation_over_once_with_its_message_across_limited_looks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = "2026-05-01T12:30:15.000Z"

    async def write() -> None:
        writer = LogWriter(tmp_path / "gw0.log.db", max_pending_bytes=1 << 26)
        writer.start(asyncio.get_running_loop())
        for i in range(5):  # one request (frame) each; from m2 on, with one violation
            body = {"type": "track", "event": "Paid", "messageId": f"m{i}",
                    "properties": {"revenue": str(i)}}
            await writer.append([Entry("web", f"m{i}", "track", at, json.dumps(body).encode())],
                                violations=[Violation(
                                    "web", f"m{i}", at, "track", "Paid", "type_mismatch",
                                    "properties.revenue", 'type: "number"', "not a number", 3,
                                    "flag")] if i >= 2 else ())
        await asyncio.to_thread(writer.close)

    asyncio.run(write())
    # each look reads two frames: the first sees m2's and m3's violations but not their
    # messages, so they wait for the next look
    monkeypatch.setattr(tail_module, "FRAME_LIMIT", 2)
    tail = LogTail(tmp_path)
    counts = Counts(None)
    seen: list[Flag] = []
    tail.sinks += [counts.add, lambda frames, refusals, flags: seen.extend(flags)]
    looks = 0
    while tail.poll() or looks == 0:
        looks += 1
    tail.poll()
    tail.stop()
    assert [f.record.message_id for f in seen] == ["m2", "m3", "m4"]
    for flag in seen:  # each with its own message, as stored
        assert json.loads(flag.body or b"{}")["messageId"] == flag.record.message_id
    [group] = counts.violation_groups(datetime(2026, 5, 1, 12, 45, tzinfo=UTC))
    assert (group["event"], group["kind"], group["counts"]["hour"]) == ("Paid",
                                                                        "type_mismatch", 3)
    assert [s["messageId"] for s in group["samples"]] == ["m4", "m3", "m2"]  # newest first
