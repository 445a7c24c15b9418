"""Ingestor.single in process where mutation testing of gateway/ingest.py found its answers
unpinned (docs/testing.md): the rate limit's Retry-After and its split between workers, the
privacy gate (not read yet: 503; a suppressed subject: 200 and stored nowhere), the messages
per request, a tracking plan's violations written with the message, and a refused message's
PII rules and error texts."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any, cast

import pytest

from tests.gateway.helpers import Captured
from tests.plans.plans import shop_plan
from trackd.errors import (
    AuthenticationError,
    InvalidRequest,
    RateLimited,
    RequestRejected,
    Unavailable,
    ValidationFailed,
)
from trackd.gateway.ingest import Ingestor, Outcome
from trackd.messages import limits
from trackd.observability import Registry, render
from trackd.plans.plan import Plan, load
from trackd.privacy.gate import PrivacyGate
from trackd.privacy.shared import SharedState
from trackd.settings import SourceSettings

SOURCES = (SourceSettings(name="web", write_keys=["wk"]),)
TRACK = {"userId": "u", "event": "E", "messageId": "m-1"}


class Gateway:
    """One ingestor on a capturing log, its metrics as /metrics prints them."""

    def __init__(self, sources: tuple[SourceSettings, ...] = SOURCES, *,
                 workers: int | None = None, plans: dict[str, Plan] | None = None,
                 privacy: PrivacyGate | None = None) -> None:
        self.log = Captured()
        self.metrics = Registry()
        extra: dict[str, Any] = {} if workers is None else {"workers": workers}
        self.ingestor = Ingestor(sources, self.log, self.metrics,  # type: ignore[arg-type]
                                 plans=plans, privacy=privacy, **extra)

    def send(self, message: dict[str, Any] | bytes, kind: str = "track",
             key: str | None = "wk") -> Outcome:
        body = message if isinstance(message, bytes) else json.dumps(message).encode()
        return asyncio.run(self.ingestor.single(kind, body, key, "10.0.0.1"))

    def refusal(self, message: dict[str, Any] | bytes, kind: str = "track",
                key: str | None = "wk") -> RequestRejected:
        with pytest.raises(RequestRejected) as refused:
            self.send(message, kind, key)
        return refused.value

    def metric(self, series: str) -> float | None:
        """One series' value as /metrics prints it (name and labels), None when absent."""
        text = render([self.metrics.snapshot()])
        found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
        return float(found.group(1)) if found else None


# -- rate limit ------------------------------------------------------------------------------

@pytest.mark.parametrize(("rate", "workers"), [(0.02, None), (0.04, 2)],
                         ids=["one-worker-by-default", "two-workers-share-it"])
def test_a_limited_source_takes_one_then_says_to_wait_50_seconds(rate: float,
                                                                  workers: int | None) -> None:
    """0.02 messages a second for this worker (the source's rate split between workers):
    the first is taken, the next one must wait 1 / 0.02 = 50 s."""
    limited = (SourceSettings(name="web", write_keys=["wk"], rate_limit_per_second=rate),)
    gateway = Gateway(limited, workers=workers)
    assert gateway.send({**TRACK, "messageId": "first"}).status == 200
    refused = gateway.refusal({**TRACK, "messageId": "second"})
    assert isinstance(refused, RateLimited)
    assert (refused.status, refused.message, refused.retry_after) == (
        429, "Rate limit of source web exceeded", 50)
    assert [e.message_id for e in gateway.log.entries] == ["first"]


# -- privacy gate ----------------------------------------------------------------------------

def test_privacy_settings_not_read_yet_are_503_retry_after_1_and_nothing_stored(
        tmp_path: Path) -> None:
    """On NATS, a worker that has not read the shared keys and list yet refuses messages."""
    gate = PrivacyGate(SOURCES, tmp_path, shared=cast(SharedState, object()))
    assert not gate.loaded
    gateway = Gateway(privacy=gate)
    refused = gateway.refusal(TRACK)
    assert isinstance(refused, Unavailable)
    assert (refused.status, refused.message, refused.retry_after) == (
        503, "The shared privacy settings are not read yet: retry later", 1)
    assert (gateway.log.entries, gateway.log.refused) == ([], [])


def test_a_suppressed_subject_is_answered_200_success_stored_nowhere_and_counted(
        tmp_path: Path) -> None:
    gate = PrivacyGate(SOURCES, tmp_path)
    assert gate.suppression is not None
    gate.suppression.apply(1, {gate.suppression.keys.subject_hash("u", "hushed")})
    gateway = Gateway(privacy=gate)
    outcome = gateway.send({"userId": "hushed", "event": "E", "messageId": "quiet"})
    assert (outcome.status, outcome.body) == (200, {"success": True})
    assert (gateway.log.entries, gateway.log.refused) == ([], [])
    assert gateway.metric('trackd_messages_suppressed_total{source="web"}') == 1
    assert gateway.send({**TRACK, "messageId": "heard"}).status == 200  # others go on
    assert [e.message_id for e in gateway.log.entries] == ["heard"]


def test_a_refused_message_is_quarantined_with_its_sources_pii_rules_applied(
        tmp_path: Path) -> None:
    sources = (SourceSettings(name="web", write_keys=["wk"],
                              pii=[{"path": "properties.card", "action": "drop"}]),)
    gateway = Gateway(sources, privacy=PrivacyGate(sources, tmp_path))
    refused = gateway.refusal({"userId": "u", "messageId": "no-event", "writeKey": "wk",
                               "properties": {"card": "4111111111111111", "n": 1}})
    assert refused.message == "Missing required field: event"
    [kept] = gateway.log.refused
    assert (kept.source, kept.message_id, kept.reason) == ("web", "no-event",
                                                           "Missing required field: event")
    assert json.loads(kept.body) == {"userId": "u", "messageId": "no-event", "type": "track",
                                     "properties": {"n": 1}}


# -- messages per request --------------------------------------------------------------------

def test_an_accepted_single_is_one_message_in_one_request() -> None:
    gateway = Gateway()
    assert gateway.send(TRACK).status == 200
    assert gateway.metric("trackd_messages_per_request_count") == 1
    assert gateway.metric("trackd_messages_per_request_sum") == 1
    assert gateway.metric('trackd_messages_per_request_bucket{le="1"}') == 1
    assert gateway.metric('trackd_messages_per_request_bucket{le="2"}') == 1
    assert gateway.metric('trackd_messages_accepted_total{source="web",type="track"}') == 1


# -- tracking plans --------------------------------------------------------------------------

def plan_of(tmp_path: Path, violations: str) -> dict[str, Plan]:
    path = tmp_path / "web.yaml"
    path.write_text(shop_plan(violations=violations))
    return {"web": load(path)}


ORDER = {"userId": "u", "event": "Order Completed", "messageId": "order",
         "properties": {"order_id": "o-1", "revenue": 10, "currency": "JPY"}}


def test_a_flagged_single_is_stored_with_its_violation_in_the_same_commit(
        tmp_path: Path) -> None:
    gateway = Gateway(plans=plan_of(tmp_path, "flag"))
    assert gateway.send(ORDER).status == 200
    [entry] = gateway.log.entries
    [violation] = gateway.log.violations
    assert (violation.source, violation.message_id, violation.type, violation.event,
            violation.violation, violation.path, violation.action) == (
        "web", "order", "track", "Order Completed", "value_invalid", "properties.currency",
        "flag")
    assert violation.received_at == entry.received_at
    assert gateway.metric('trackd_plan_violations_total{source="web",violation="value_invalid",'
                          'action="flag"}') == 1


def test_a_blocked_single_is_refused_quarantined_and_its_violation_recorded(
        tmp_path: Path) -> None:
    gateway = Gateway(plans=plan_of(tmp_path, "block"))
    refused = gateway.refusal(ORDER)
    assert isinstance(refused, ValidationFailed)
    assert (refused.status, refused.message) == (
        400, "tracking plan: value_invalid at properties.currency")
    assert gateway.log.entries == []
    [kept] = gateway.log.refused
    assert (kept.message_id, kept.reason) == (
        "order", "tracking plan: value_invalid at properties.currency")
    [violation] = gateway.log.violations
    assert (violation.source, violation.message_id, violation.type, violation.action) == (
        "web", "order", "track", "block")
    assert violation.received_at == kept.received_at
    assert gateway.metric('trackd_messages_refused_total{reason="tracking plan"}') == 1


# -- refusals before the message is read ----------------------------------------------------

@pytest.mark.parametrize(("body", "key", "error", "message"), [
    (b"not json", "wk", InvalidRequest, "Body is not valid JSON"),
    (b"[1, 2]", "wk", InvalidRequest, "Body must be a JSON object"),
    (b"not json", None, AuthenticationError,
     "Missing write key: send it as HTTP Basic user or writeKey"),
    (b"[1, 2]", "wk_nope", AuthenticationError,
     "Missing write key: send it as HTTP Basic user or writeKey"),
], ids=["not-json", "not-an-object", "not-json-no-key", "not-an-object-unknown-key"])
def test_a_body_that_cannot_be_read_is_refused_with_its_reason(
        body: bytes, key: str | None, error: type[RequestRejected], message: str) -> None:
    gateway = Gateway()
    refused = gateway.refusal(body, key=key)
    assert (type(refused), refused.message) == (error, message)
    assert (gateway.log.entries, gateway.log.refused) == ([], [])


def test_the_write_key_in_the_body_is_used_when_no_header_key_is_sent() -> None:
    gateway = Gateway()
    assert gateway.send({**TRACK, "writeKey": "wk"}, key=None).status == 200
    [entry] = gateway.log.entries
    assert entry.source == "web" and "writeKey" not in json.loads(entry.body)


def test_a_message_over_32768_bytes_is_413_with_the_limit_in_its_text() -> None:
    gateway = Gateway()
    body = json.dumps({**TRACK, "properties": {"pad": "x" * limits.MAX_MESSAGE_BYTES}})
    refused = gateway.refusal(body.encode())
    assert isinstance(refused, ValidationFailed)
    assert (refused.status, refused.message) == (413, "Event payload exceeds 32KB limit")
