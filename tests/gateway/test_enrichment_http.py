"""Enrichment as stored in the log, over real HTTP (contract section 6)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import Server
from tests.gateway.helpers import new_id, post, quarantined_with, stored_one

ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_received_at_message_id_version_and_ip(live: Server) -> None:
    given, missing = new_id(), new_id("marker")
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    assert post(live, "/v1/track", {"userId": "u", "event": "E", "messageId": given}
                ).status_code == 200
    response = post(live, "/v1/batch", {"batch": [
        {"type": "track", "userId": "u", "event": "E", "marker": missing},
        {"type": "track", "userId": "u", "event": "E", "marker": missing + "-2"}]})
    assert response.status_code == 200
    after = datetime.now(UTC) + timedelta(milliseconds=1)
    doc = stored_one(live, given)
    assert doc["messageId"] == given
    assert ISO_MS_Z.match(doc["receivedAt"])
    assert before <= at(doc["receivedAt"]) <= after
    assert doc["timestamp"] == doc["receivedAt"]  # no client timestamp
    assert doc["version"] == 2
    assert doc["context"] == {"ip": "127.0.0.1"}
    assert doc["type"] == "track"

    from trackd.log.reader import LogReader

    reader = LogReader(live.data_dir / "log")
    try:
        generated = [json.loads(r.body) for r in reader.read("test", limit=1_000_000)
                     if missing.encode() in r.body]
    finally:
        reader.close()
    assert len(generated) == 2
    ids = {g["messageId"] for g in generated}
    assert len(ids) == 2 and all(isinstance(i, str) and i for i in ids)
    assert len({g["receivedAt"] for g in generated}) == 1  # one clock reading per request


def test_clock_skew_correction_with_concrete_numbers(live: Server) -> None:
    """The device clock is in 2001; it stamped the event 4.5 s before sending it."""
    item_sent, envelope_sent, unsent = new_id(), new_id(), new_id()
    post(live, "/v1/batch", {
        "sentAt": "2001-01-01T10:00:00.000+01:00",
        "batch": [
            {"type": "track", "userId": "u", "event": "E", "messageId": envelope_sent,
             "timestamp": "2001-01-01T08:59:55.500Z"},
            {"type": "track", "userId": "u", "event": "E", "messageId": item_sent,
             "timestamp": "2001-01-01T09:00:00.000Z", "sentAt": "2001-01-01T09:01:00.250Z"},
            {"type": "track", "userId": "u", "event": "E", "messageId": unsent,
             "timestamp": "2001-01-01T09:00:00.000Z"},
        ]})
    doc = stored_one(live, envelope_sent)
    assert doc["originalTimestamp"] == "2001-01-01T08:59:55.500Z"
    assert doc["sentAt"] == "2001-01-01T10:00:00.000+01:00"  # from the envelope
    assert at(doc["receivedAt"]) - at(doc["timestamp"]) == timedelta(seconds=4.5)
    assert ISO_MS_Z.match(doc["timestamp"])

    doc = stored_one(live, item_sent)
    assert doc["sentAt"] == "2001-01-01T09:01:00.250Z"  # the item's own wins
    assert at(doc["receivedAt"]) - at(doc["timestamp"]) == timedelta(seconds=60.25)

    doc = stored_one(live, unsent)  # the envelope's sentAt applies to every item
    assert doc["sentAt"] == "2001-01-01T10:00:00.000+01:00"
    assert at(doc["receivedAt"]) - at(doc["timestamp"]) == timedelta(seconds=0)


def test_single_messages_use_their_own_sent_at(live: Server) -> None:
    with_sent, without = new_id(), new_id()
    post(live, "/v1/page", {"userId": "u", "messageId": with_sent,
                            "timestamp": "2024-05-01T12:00:00.000Z",
                            "sentAt": "2024-05-01T12:00:02.000Z"})
    post(live, "/v1/page", {"userId": "u", "messageId": without,
                            "timestamp": "2024-05-01T14:00:00.123+02:00"})
    doc = stored_one(live, with_sent)
    assert at(doc["receivedAt"]) - at(doc["timestamp"]) == timedelta(seconds=2)
    doc = stored_one(live, without)
    assert "sentAt" not in doc
    assert doc["originalTimestamp"] == "2024-05-01T14:00:00.123+02:00"
    assert doc["timestamp"] == "2024-05-01T12:00:00.123Z"


def test_envelope_context_and_integrations_are_merged_and_the_item_wins(live: Server) -> None:
    plain, own = new_id(), new_id()
    post(live, "/v1/batch", {
        "context": {"library": {"name": "lib", "version": "1.0"}, "app": {"name": "Shop",
                                                                          "build": "7"}},
        "integrations": {"All": False, "Mixpanel": {"people": True}},
        "batch": [
            {"type": "identify", "userId": "u", "messageId": plain},
            {"type": "identify", "userId": "u", "messageId": own,
             "context": {"app": {"build": "8"}, "ip": "203.0.113.9"},
             "integrations": {"Mixpanel": {"token": "t"}, "All": True}},
        ]})
    doc = stored_one(live, plain)
    assert doc["context"] == {"library": {"name": "lib", "version": "1.0"},
                              "app": {"name": "Shop", "build": "7"}, "ip": "127.0.0.1"}
    assert doc["integrations"] == {"All": False, "Mixpanel": {"people": True}}
    doc = stored_one(live, own)
    assert doc["context"] == {"library": {"name": "lib", "version": "1.0"},
                              "app": {"name": "Shop", "build": "8"}, "ip": "203.0.113.9"}
    assert doc["integrations"] == {"All": True, "Mixpanel": {"people": True, "token": "t"}}


def test_type_from_the_path_unknown_fields_kept_write_key_removed(live: Server) -> None:
    message_id = new_id()
    sent: dict[str, Any] = {
        "type": "identify", "userId": "u", "event": "Signed Up", "messageId": message_id,
        "writeKey": "wk_web", "channel": "server", "_metadata": {"bundled": ["Segment.io"]},
        "anonymousId": None, "properties": {"nested": {"list": [1, "two", None, 3.5]}},
        "somethingElse": [{"a": 1}], "context": {"library": {"name": "x", "version": "1"}},
    }
    assert post(live, "/v1/t", sent, key=None).status_code == 200
    doc = stored_one(live, message_id)
    assert doc["type"] == "track"
    assert "writeKey" not in doc
    enrichment = {"receivedAt", "timestamp", "version"}
    assert set(doc) == (set(sent) - {"writeKey"}) | enrichment
    for name in set(sent) - {"writeKey", "type", "context"}:
        assert doc[name] == sent[name], name
    assert doc["context"] == {**sent["context"], "ip": "127.0.0.1"}


def test_a_refused_single_is_quarantined_without_its_write_key(live: Server) -> None:
    marker = new_id("marker")
    response = post(live, "/v1/track", {"userId": "u", "writeKey": "wk_web", "marker": marker},
                    key=None)
    assert response.status_code == 400
    [kept] = quarantined_with(live, marker)
    assert "wk_web" not in str(kept["body"])
    assert json.loads(str(kept["body"]))["marker"] == marker


def test_x_forwarded_for_is_ignored_from_untrusted_peers(live: Server) -> None:
    message_id = new_id()
    post(live, "/v1/track", {"userId": "u", "event": "E", "messageId": message_id},
         headers={"X-Forwarded-For": "198.51.100.7"})
    assert stored_one(live, message_id)["context"]["ip"] == "127.0.0.1"
