"""Every validation message over HTTP: single endpoints answer 400, batch items are refused
one by one (listed with index and reason, kept in the quarantine) while valid items are stored.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.conftest import Server
from tests.gateway.helpers import (
    error_of,
    new_id,
    post,
    quarantined_with,
    stored,
    stored_one,
)
from tests.messages.cases import ACCEPTED, REFUSED

CASES = [c[1:] for c in REFUSED]
IDS = [c[0] for c in REFUSED]


def marked(message: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A copy of `message` carrying a unique unknown field, to find it in the quarantine."""
    marker = new_id("case")
    return {**copy.deepcopy(message), "x_case": marker}, marker


@pytest.mark.parametrize(("kind", "message", "reason"), CASES, ids=IDS)
def test_single_endpoint_answers_400_with_the_exact_reason(
        live: Server, kind: str, message: dict[str, Any], reason: str) -> None:
    body, marker = marked(message)
    response = post(live, f"/v1/{kind}", body)
    assert response.status_code == 400, response.text
    assert error_of(response) == ("validation_error", reason)
    kept = quarantined_with(live, marker)
    assert [(q["reason"], q["batchIndex"], q["source"]) for q in kept] == [(reason, None, "web")]


@pytest.mark.parametrize(("kind", "message", "reason"), CASES, ids=IDS)
def test_batch_item_is_refused_alone_and_kept_in_quarantine(
        live: Server, kind: str, message: dict[str, Any], reason: str) -> None:
    good_id = new_id("good")
    bad, marker = marked({**message, "type": kind})
    batch = [{"type": "track", "userId": "u", "event": "Fine", "messageId": good_id}, bad]
    response = post(live, "/v1/batch", {"batch": batch})
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["success"] is True and doc["accepted"] == 1
    [rejected] = doc["rejected"]
    assert rejected["index"] == 1
    assert rejected["error"] == {"type": "validation_error", "message": reason}
    message_id = bad.get("messageId")
    assert rejected["messageId"] == (message_id if isinstance(message_id, str) else None)
    assert stored_one(live, good_id)["event"] == "Fine"
    kept = quarantined_with(live, marker)
    assert [(q["reason"], q["batchIndex"]) for q in kept] == [(reason, 1)]
    assert json.loads(str(kept[0]["body"])) == bad


@pytest.mark.parametrize(("item", "reason"), [
    ({"userId": "u", "event": "E"}, "Missing required field: type"),
    ({"type": "purchase", "userId": "u"}, "Invalid type: purchase"),
    ({"type": 5, "userId": "u"}, "Invalid type: 5"),
    ("not an object", "Message must be a JSON object"),
    ([1, 2], "Message must be a JSON object"),
    (None, "Message must be a JSON object"),
    ({"type": "track", "userId": "u", "event": "Big", "properties": {"p": "x" * 33000}},
     "Event payload exceeds 32KB limit"),
], ids=["no-type", "unknown-type", "numeric-type", "string", "array", "null", "over-32KB"])
def test_batch_only_refusals(live: Server, item: Any, reason: str) -> None:
    good_id = new_id("good")
    response = post(live, "/v1/import", {"batch": [
        {"type": "identify", "userId": "u", "messageId": good_id}, item, item]})
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["accepted"] == 1
    assert [(r["index"], r["error"]["message"]) for r in doc["rejected"]] == [
        (1, reason), (2, reason)]
    assert stored_one(live, good_id)["type"] == "identify"


@pytest.mark.parametrize(("kind", "message"), [c[1:] for c in ACCEPTED],
                         ids=[c[0] for c in ACCEPTED])
def test_valid_messages_at_the_limits_are_stored(live: Server, kind: str,
                                                 message: dict[str, Any]) -> None:
    single = {**copy.deepcopy(message), "messageId": message.get("messageId") or new_id()}
    if "messageId" in message:  # the 100-character id: make it unique, same length
        single["messageId"] = new_id()[:20].ljust(100, "m")
    response = post(live, f"/v1/{kind}", single)
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    assert stored_one(live, single["messageId"])["type"] == kind

    item = {**copy.deepcopy(message), "type": kind, "messageId": new_id()}
    response = post(live, "/v1/b", {"batch": [item]})
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "accepted": 1}
    assert len(stored(live, item["messageId"])) == 1


def test_numeric_ids_are_stored_as_strings(live: Server) -> None:
    message_id = new_id()
    response = post(live, "/v1/group", {"userId": 42, "anonymousId": 3.0, "groupId": 1234,
                                        "messageId": message_id})
    assert response.status_code == 200
    doc = stored_one(live, message_id)
    assert (doc["userId"], doc["anonymousId"], doc["groupId"]) == ("42", "3", "1234")
