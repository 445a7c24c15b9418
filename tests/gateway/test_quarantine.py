"""Refused batch items are kept with their index and reason, visible to the operator."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import Server
from tests.gateway.helpers import ADMIN_TOKEN, new_id, post, quarantined, stored_one


@pytest.fixture(scope="module")
def refused(live: Server) -> dict[str, str]:
    """One batch of five items, two refused; returns the messageIds by role."""
    ids = {"good": new_id(), "no_event": new_id(), "good2": new_id(), "bad_type": new_id(),
           "good3": new_id()}
    response = post(live, "/v1/batch", {"batch": [
        {"type": "track", "userId": "u", "event": "E", "messageId": ids["good"]},
        {"type": "track", "userId": "u", "messageId": ids["no_event"], "properties": {"a": 1}},
        {"type": "page", "userId": "u", "messageId": ids["good2"]},
        {"type": "purchase", "userId": "u", "messageId": ids["bad_type"]},
        {"type": "identify", "userId": "u", "messageId": ids["good3"]},
    ]}, key="wk_backend")
    assert response.status_code == 200
    assert response.json() == {"success": True, "accepted": 3, "rejected": [
        {"index": 1, "messageId": ids["no_event"], "error": {
            "type": "validation_error", "message": "Missing required field: event"}},
        {"index": 3, "messageId": ids["bad_type"], "error": {
            "type": "validation_error", "message": "Invalid type: purchase"}}]}
    return ids


def test_refused_items_are_kept_with_index_and_reason(live: Server,
                                                      refused: dict[str, str]) -> None:
    for role in ("good", "good2", "good3"):
        stored_one(live, refused[role])
    [no_event] = quarantined(live, refused["no_event"])
    assert (no_event["batchIndex"], no_event["reason"], no_event["source"]) == (
        1, "Missing required field: event", "backend")
    assert json.loads(str(no_event["body"])) == {
        "type": "track", "userId": "u", "messageId": refused["no_event"],
        "properties": {"a": 1}}
    [bad_type] = quarantined(live, refused["bad_type"])
    assert (bad_type["batchIndex"], bad_type["reason"]) == (3, "Invalid type: purchase")


def test_the_quarantine_command_lists_them(live: Server, refused: dict[str, str]) -> None:
    out = live.run_cli("quarantine", "--source", "backend", "--limit", "1000").stdout
    lines = {line for line in out.splitlines() if refused["no_event"] in line}
    assert len(lines) == 1
    assert "Missing required field: event" in lines.pop()
    assert any(refused["bad_type"] in line and "Invalid type: purchase" in line
               for line in out.splitlines())
    assert refused["no_event"] not in live.run_cli("quarantine", "--source", "web",
                                                   "--limit", "1000").stdout


def test_the_admin_api_lists_them_with_the_admin_token(live: Server,
                                                       refused: dict[str, str]) -> None:
    response = httpx.get(live.url + "/api/v1/quarantine",
                         params={"source": "backend", "limit": "1000"},
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200, response.text
    rows = {row["messageId"]: row for row in response.json()["quarantined"]}
    assert rows[refused["no_event"]]["reason"] == "Missing required field: event"
    assert rows[refused["no_event"]]["batchIndex"] == 1
    assert rows[refused["bad_type"]]["batchIndex"] == 3
    assert refused["good"] not in rows


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wk_backend"}, {"Authorization": "Bearer wrong"},
    {"Authorization": "Basic d2tfYmFja2VuZDo="},  # wk_backend:
], ids=["none", "write-key-bearer", "wrong-token", "write-key-basic"])
def test_the_admin_api_needs_the_admin_token(live: Server, headers: dict[str, str]) -> None:
    response = httpx.get(live.url + "/api/v1/quarantine", headers=headers)
    assert response.status_code == 401
