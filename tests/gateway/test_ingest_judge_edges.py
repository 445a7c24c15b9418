"""A batch's envelope and items judged to the letter where mutation testing of
gateway/ingest.py found them unpinned (docs/testing.md): each envelope error's own line on
both parsing paths, the refusal counter of batch items, and the privacy gate inside a batch
(a suppressed subject among others, a refused item's PII, a gate not read yet)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server
from tests.gateway.helpers import Captured, error_of, new_id, post, stored
from tests.gateway.test_ingest_edges import refused_count
from trackd.errors import Unavailable
from trackd.gateway.ingest import Ingestor, Outcome
from trackd.log.reader import LogReader
from trackd.observability import Registry
from trackd.privacy.gate import PrivacyGate
from trackd.settings import SourceSettings

# A member whose value is not UTF-8: the body does not decode whole, so the gateway reads the
# envelope on its own first (the step-by-step path), which must say the same as the usual one.
_NOT_UTF8 = b',"note":"\xff"}'


def _body(envelope: dict[str, Any], stepwise: bool) -> bytes:
    whole = json.dumps(envelope).encode()
    return whole[:-1] + _NOT_UTF8 if stepwise else whole


@pytest.mark.parametrize("stepwise", [False, True], ids=["decoded-whole", "step-by-step"])
@pytest.mark.parametrize(("envelope", "message"), [
    ({"batch": []}, "batch must not be empty"),
    ({"context": "c"}, "context must be an object"),
    ({"integrations": [1]}, "integrations must be an object"),
    ({"sentAt": "yesterday"}, "Invalid timestamp: sentAt"),
], ids=["empty", "context", "integrations", "sentAt"])
def test_a_bad_envelope_is_400_with_its_own_line_and_nothing_stored(
        live: Server, envelope: dict[str, Any], message: str, stepwise: bool) -> None:
    message_id = new_id()
    doc = {"batch": [{"type": "track", "userId": "u", "event": "E", "messageId": message_id}],
           **envelope}
    response = post(live, "/v1/batch", _body(doc, stepwise))
    assert response.status_code == 400, response.text
    assert error_of(response) == ("validation_error", message)
    assert stored(live, message_id) == []


@pytest.mark.parametrize(("envelope", "message"), [
    ({"batch": None}, "Missing required field: batch"),
    ({"sentAt": "2024-05-01T12:00:00Z"}, "Missing required field: batch"),
    ({"batch": 3}, "batch must be an array"),
    ({"batch": {"type": "track"}}, "batch must be an array"),
], ids=["null", "absent", "number", "object"])
def test_a_missing_or_wrong_batch_says_so_on_the_step_by_step_path(
        live: Server, envelope: dict[str, Any], message: str) -> None:
    response = post(live, "/v1/batch", _body(envelope, stepwise=True))
    assert response.status_code == 400, response.text
    assert error_of(response) == ("validation_error", message)


def test_the_write_key_in_the_body_is_read_on_the_step_by_step_path(live: Server) -> None:
    message_id = new_id()
    body = _body({"writeKey": "wk_web", "batch": [
        {"type": "track", "userId": "u", "event": "E", "messageId": message_id}]},
        stepwise=True)
    response = post(live, "/v1/batch", body, key=None)
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "accepted": 1}
    assert len(stored(live, message_id)) == 1


def test_batch_items_are_stored_under_the_source_of_their_key(live: Server) -> None:
    message_id = new_id()
    response = post(live, "/v1/batch", {"batch": [
        {"type": "track", "userId": "u", "event": "E", "messageId": message_id}]},
        key="wk_backend")
    assert response.status_code == 200, response.text
    reader = LogReader(live.data_dir / "log")
    try:
        assert [record.source for record in reader.find(message_id)] == ["backend"]
    finally:
        reader.close()


@pytest.mark.parametrize("path", ["/v1/track", "/v1/batch"])
@pytest.mark.parametrize(("key", "message"), [
    (None, "Missing write key: send it as HTTP Basic user or writeKey"),
    ("wk_nope", "Invalid write key"),
], ids=["missing", "unknown"])
def test_a_401_says_whether_the_key_is_missing_or_unknown(
        live: Server, path: str, key: str | None, message: str) -> None:
    track = {"type": "track", "userId": "u", "event": "E", "messageId": new_id()}
    response = post(live, path, track if path == "/v1/track" else {"batch": [track]}, key=key)
    assert response.status_code == 401, response.text
    assert error_of(response) == ("authentication_error", message)


def test_a_single_message_without_a_message_id_is_given_one(live: Server) -> None:
    marker = new_id("no-id")
    response = post(live, "/v1/track", {"userId": "u", "event": "E", "marker": marker})
    assert response.status_code == 200, response.text
    reader = LogReader(live.data_dir / "log")
    try:
        [record] = [r for r in reader.read("test", limit=1_000_000) if marker.encode() in r.body]
    finally:
        reader.close()
    assert record.message_id.startswith("trk-")
    assert json.loads(record.body)["messageId"] == record.message_id


def test_refused_batch_items_are_counted_by_the_reason_before_its_detail(live: Server) -> None:
    before = refused_count(live, "Missing required field")
    response = post(live, "/v1/batch", {"batch": [
        {"type": "track", "userId": "u", "event": "E", "messageId": new_id()},
        {"type": "track", "userId": "u", "messageId": new_id()},
        {"type": "alias", "userId": "u", "messageId": new_id()}]})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    assert refused_count(live, "Missing required field") == before + 2


# -- the privacy gate inside a batch, in process (its suppression list set as `trackd privacy
# -- suppress` leaves it) ---------------------------------------------------------------------

_PRIVATE = (SourceSettings(name="web", write_keys=["wk"], ip="drop",
                           pii=[{"path": "context.traits.email", "action": "hash"}]),)


def _gate(tmp_path: Path, *suppressed_users: str) -> PrivacyGate:
    gate = PrivacyGate(_PRIVATE, tmp_path)
    suppression = gate.suppression
    assert suppression is not None
    suppression.apply(1, {suppression.keys.subject_hash("u", user) for user in suppressed_users})
    return gate


def _batch(gate: PrivacyGate, items: list[Any]) -> tuple[Outcome, Captured, Registry]:
    log, metrics = Captured(), Registry()
    ingestor = Ingestor(_PRIVATE, log, metrics, privacy=gate)  # type: ignore[arg-type]
    body = json.dumps({"batch": items}).encode()
    return asyncio.run(ingestor.batch(body, "wk", "203.0.113.7")), log, metrics


def test_a_suppressed_subject_is_skipped_and_the_rest_of_the_batch_is_judged(
        tmp_path: Path) -> None:
    outcome, log, metrics = _batch(_gate(tmp_path, "hushed"), [
        {"type": "track", "userId": "free", "event": "E", "messageId": "before"},
        {"type": "track", "userId": "hushed", "event": "E", "messageId": "hushed"},
        {"type": "track", "userId": "free", "event": "E", "messageId": "after"},
        {"type": "track", "userId": "free", "messageId": "refused"}])
    assert outcome.status == 200
    assert outcome.body["accepted"] == 3  # the suppressed one counts as accepted: nothing said
    assert [r["messageId"] for r in outcome.body["rejected"]] == ["refused"]
    assert [e.message_id for e in log.entries] == ["before", "after"]
    assert [r.message_id for r in log.refused] == ["refused"]
    suppressed = metrics.counter("trackd_messages_suppressed_total", "", ("source",))
    assert suppressed.values == {("web",): 1.0}


def test_a_refused_batch_item_is_quarantined_with_the_sources_privacy_rules(
        tmp_path: Path) -> None:
    gate = _gate(tmp_path)
    outcome, log, _ = _batch(gate, [
        {"type": "track", "userId": "u", "event": "E", "messageId": "ok"},
        {"type": "track", "userId": "u", "messageId": "kept", "writeKey": "wk",
         "context": {"ip": "198.51.100.9", "traits": {"email": "ann@example.com"}}},
        7])
    assert [r["messageId"] for r in outcome.body["rejected"]] == ["kept", None]
    kept, seven = log.refused
    assert seven.body == b"7"  # nothing to scrub in what is not an object: kept as sent
    assert (kept.source, kept.index, kept.reason) == ("web", 1, "Missing required field: event")
    body = json.loads(kept.body)
    policy = gate.policies["web"]
    expected: dict[str, Any] = {"traits": {"email": "ann@example.com"}}
    policy.apply({"context": expected})
    assert body["context"] == expected  # the email hashed, the ip dropped, as stored ones are
    assert "ann@example.com" not in kept.body.decode() and "writeKey" not in body


def test_a_gate_that_has_not_read_the_shared_state_yet_refuses_with_503(
        tmp_path: Path) -> None:
    gate = _gate(tmp_path)
    gate.suppression = None  # as a worker on NATS is until its first read of the shared list
    with pytest.raises(Unavailable) as refused:
        _batch(gate, [{"type": "track", "userId": "u", "event": "E", "messageId": "early"}])
    assert (refused.value.status, refused.value.message, refused.value.retry_after) == (
        503, "The shared privacy settings are not read yet: retry later", 1)
