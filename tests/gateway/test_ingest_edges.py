"""The tracking API's answers to the letter where mutation testing of gateway/ingest.py found
them unpinned by the ingest tests (docs/testing.md): a batch with nothing valid, the refusal
counter's reason label, and a partly valid batch's accepted count and counter."""

from __future__ import annotations

import re

import httpx

from tests.conftest import Server
from tests.gateway.helpers import new_id, post, quarantined, stored


def counted(server: Server, series: str) -> float:
    """The value of one series of /metrics (name and labels as printed), 0 when absent."""
    text = httpx.get(server.url + "/metrics", timeout=30).text
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def refused_count(server: Server, reason: str) -> float:
    return counted(server, f'trackd_messages_refused_total{{reason="{reason}"}}')


def accepted_count(server: Server, kind: str) -> float:
    return counted(server, f'trackd_messages_accepted_total{{source="web",type="{kind}"}}')


def test_a_batch_with_no_valid_message_is_400_with_each_rejection(live: Server) -> None:
    first, second = new_id(), new_id()
    response = post(live, "/v1/batch", {"batch": [
        {"type": "track", "userId": "u", "messageId": first},
        {"type": "alias", "userId": "u", "messageId": second}]})
    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "error": {"type": "validation_error", "message": "No valid message in batch"},
        "code": "validation_error", "message": "No valid message in batch",
        "accepted": 0, "rejected": [
            {"index": 0, "messageId": first, "error": {
                "type": "validation_error", "message": "Missing required field: event"}},
            {"index": 1, "messageId": second, "error": {
                "type": "validation_error", "message": "Missing required field: previousId"}}]}
    assert stored(live, first) == [] and len(quarantined(live, first)) == 1


def test_refusals_are_counted_by_the_reason_before_its_detail(live: Server) -> None:
    before = refused_count(live, "Missing required field")
    response = post(live, "/v1/track", {"userId": "u", "messageId": new_id()})
    assert response.status_code == 400
    assert refused_count(live, "Missing required field") == before + 1



def test_a_partly_valid_batch_answers_and_counts_what_it_accepted(live: Server) -> None:
    tracks, identifies = accepted_count(live, "track"), accepted_count(live, "identify")
    bad = new_id()
    response = post(live, "/v1/batch", {"batch": [
        {"type": "track", "userId": "u", "event": "E", "messageId": new_id()},
        {"type": "track", "userId": "u", "event": "E", "messageId": new_id()},
        {"type": "identify", "userId": "u", "messageId": new_id()},
        {"type": "track", "userId": "u", "messageId": bad}]})
    assert response.status_code == 200
    assert response.json()["accepted"] == 3
    assert [r["messageId"] for r in response.json()["rejected"]] == [bad]
    assert accepted_count(live, "track") == tracks + 2
    assert accepted_count(live, "identify") == identifies + 1
