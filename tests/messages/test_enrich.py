"""enrich: the server-side fields of contract section 6, with concrete clock-skew numbers."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from trackd.messages.enrich import API_VERSION, Envelope, MessageIds, deep_merge, enrich, iso

RECEIVED = datetime(2024, 5, 1, 12, 0, 10, 250000, tzinfo=UTC)
ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def run(message: dict[str, Any], **envelope: Any) -> dict[str, Any]:
    enrich(message, Envelope(RECEIVED, **envelope), MessageIds())
    return message


def test_received_at_is_the_server_clock_in_utc_with_ms_and_z() -> None:
    out = run({"type": "track", "userId": "u", "event": "E"})
    assert out["receivedAt"] == "2024-05-01T12:00:10.250Z"
    assert ISO_MS_Z.match(out["receivedAt"])


def test_iso_always_has_four_digit_years_ms_and_z() -> None:
    assert iso(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00.000Z"
    assert iso(datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == \
        "0999-12-31T23:59:59.999Z"
    plus_two = datetime(2024, 5, 1, 14, 0, 0, 1500, tzinfo=UTC).astimezone(
        datetime.fromisoformat("2024-05-01T14:00:00+02:00").tzinfo)
    assert iso(plus_two) == "2024-05-01T14:00:00.001Z"


def test_a_given_message_id_is_kept() -> None:
    out = run({"type": "track", "userId": "u", "event": "E", "messageId": "my-id-1"})
    assert out["messageId"] == "my-id-1"


@pytest.mark.parametrize("given", [{}, {"messageId": None}, {"messageId": ""}])
def test_a_missing_message_id_is_generated_unique(given: dict[str, Any]) -> None:
    ids = MessageIds()
    envelope = Envelope(RECEIVED)
    seen = set()
    for _ in range(1000):
        message = {"type": "track", "userId": "u", "event": "E", **given}
        returned = enrich(message, envelope, ids)
        assert message["messageId"] == returned
        assert isinstance(returned, str) and 0 < len(returned) <= 100
        seen.add(returned)
    assert len(seen) == 1000
    assert not seen & {enrich({"userId": "u"}, envelope, MessageIds()) for _ in range(100)}


def test_clock_skew_is_corrected_with_sent_at() -> None:
    # The device's clock is 1 h 5 s behind: it stamped the event 5 s before it sent the batch.
    out = run({"type": "track", "userId": "u", "event": "E",
               "timestamp": "2024-05-01T11:00:00.000Z", "sentAt": "2024-05-01T11:00:05.000Z"})
    assert out["originalTimestamp"] == "2024-05-01T11:00:00.000Z"
    assert out["sentAt"] == "2024-05-01T11:00:05.000Z"
    # receivedAt - (sentAt - originalTimestamp) = 12:00:10.250 - 5 s
    assert out["timestamp"] == "2024-05-01T12:00:05.250Z"


def test_clock_skew_arithmetic_across_time_zones_and_a_fast_clock() -> None:
    # sentAt 13:00:05+02:00 = 11:00:05Z; the event happened 6.5 s before sending.
    out = run({"type": "track", "userId": "u", "event": "E",
               "timestamp": "2024-05-01T10:59:58.500+00:00"},
              sent_at="2024-05-01T13:00:05+02:00")
    assert out["timestamp"] == "2024-05-01T12:00:03.750Z"
    assert out["originalTimestamp"] == "2024-05-01T10:59:58.500+00:00"
    assert out["sentAt"] == "2024-05-01T13:00:05+02:00"
    # A device clock one day fast: the correction brings it back to the server's time line.
    fast = run({"type": "track", "userId": "u", "event": "E",
                "timestamp": "2024-05-02T12:00:00.000Z", "sentAt": "2024-05-02T12:00:01.000Z"})
    assert fast["timestamp"] == "2024-05-01T12:00:09.250Z"


def test_the_item_sent_at_wins_over_the_envelope() -> None:
    out = run({"type": "track", "userId": "u", "event": "E",
               "timestamp": "2024-05-01T11:59:00.000Z", "sentAt": "2024-05-01T11:59:30.000Z"},
              sent_at="2024-05-01T11:00:00.000Z")
    assert out["sentAt"] == "2024-05-01T11:59:30.000Z"
    assert out["timestamp"] == "2024-05-01T11:59:40.250Z"


def test_without_sent_at_the_timestamp_is_the_original_one() -> None:
    out = run({"type": "track", "userId": "u", "event": "E",
               "timestamp": "2024-05-01T14:00:00+02:00"})
    assert out["originalTimestamp"] == "2024-05-01T14:00:00+02:00"
    assert out["timestamp"] == "2024-05-01T12:00:00.000Z"
    assert "sentAt" not in out


def test_without_a_client_timestamp_the_timestamp_is_received_at() -> None:
    out = run({"type": "track", "userId": "u", "event": "E"}, sent_at="2024-05-01T11:00:00Z")
    assert out["timestamp"] == out["receivedAt"] == "2024-05-01T12:00:10.250Z"
    assert "originalTimestamp" not in out
    assert out["sentAt"] == "2024-05-01T11:00:00Z"


@pytest.mark.parametrize(("timestamp", "sent_at"), [
    ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"),
    ("9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z"),
    ("0001-01-01T00:00:00+00:00", None),
    ("9999-12-31T23:59:59.999Z", "2024-05-01T12:00:00Z"),
])
def test_absurd_client_clocks_never_break_enrichment(timestamp: str,
                                                     sent_at: str | None) -> None:
    out = run({"type": "track", "userId": "u", "event": "E", "timestamp": timestamp},
              sent_at=sent_at)
    assert out["originalTimestamp"] == timestamp
    assert ISO_MS_Z.match(out["timestamp"])


def test_envelope_context_and_integrations_are_deep_merged_and_the_item_wins() -> None:
    context = {"library": {"name": "lib", "version": "1"}, "locale": "en-US",
               "app": {"name": "A", "build": "7"}}
    integrations = {"All": True, "Mixpanel": {"people": True, "token": "t"}}
    before = copy.deepcopy((context, integrations))
    out = run({"type": "track", "userId": "u", "event": "E",
               "context": {"app": {"build": "8"}, "locale": "fr-FR"},
               "integrations": {"Mixpanel": {"people": False}, "Amplitude": False}},
              context=context, integrations=integrations)
    assert out["context"] == {"library": {"name": "lib", "version": "1"}, "locale": "fr-FR",
                              "app": {"name": "A", "build": "8"}}
    assert out["integrations"] == {"All": True, "Amplitude": False,
                                   "Mixpanel": {"people": False, "token": "t"}}
    assert (context, integrations) == before  # the envelope is shared by every item
    other = run({"type": "track", "userId": "u", "event": "E"}, context=context)
    assert other["context"] == context
    other["context"]["locale"] = "changed"
    assert context["locale"] == "en-US"


def test_deep_merge_keeps_both_inputs_unchanged() -> None:
    base = {"a": {"b": 1, "c": {"d": 2}}, "x": 1}
    top = {"a": {"c": {"e": 3}}, "x": {"y": 1}}
    assert deep_merge(base, top) == {"a": {"b": 1, "c": {"d": 2, "e": 3}}, "x": {"y": 1}}
    assert base == {"a": {"b": 1, "c": {"d": 2}}, "x": 1}
    assert top == {"a": {"c": {"e": 3}}, "x": {"y": 1}}


def test_context_ip_is_the_client_address_unless_the_message_has_one() -> None:
    assert run({"type": "track", "userId": "u", "event": "E"}, ip="10.1.2.3")["context"] == {
        "ip": "10.1.2.3"}
    out = run({"type": "track", "userId": "u", "event": "E", "context": {"locale": "x"}},
              ip="10.1.2.3")
    assert out["context"] == {"locale": "x", "ip": "10.1.2.3"}
    kept = run({"type": "track", "userId": "u", "event": "E", "context": {"ip": "8.8.8.8"}},
               ip="10.1.2.3")
    assert kept["context"] == {"ip": "8.8.8.8"}
    assert "context" not in run({"type": "track", "userId": "u", "event": "E"})


def test_version_is_stamped_unknown_fields_kept_and_the_write_key_removed() -> None:
    message = {"type": "screen", "userId": "u", "name": "Home", "writeKey": "wk_secret",
               "channel": "server", "_metadata": {"nodeVersion": "v20"}, "custom": [1, {"a": 2}],
               "anonymousId": None}
    out = run(copy.deepcopy(message))
    assert out["version"] == API_VERSION == 2
    assert "writeKey" not in out
    for name in ("channel", "_metadata", "custom", "anonymousId", "name", "userId", "type"):
        assert out[name] == message[name]


def test_received_at_is_one_reading_per_request() -> None:
    envelope = Envelope(datetime.now(UTC))
    ids = MessageIds()
    stamps = set()
    for _ in range(50):
        message: dict[str, Any] = {"type": "track", "userId": "u", "event": "E"}
        enrich(message, envelope, ids)
        stamps.add(message["receivedAt"])
    assert len(stamps) == 1
    assert abs(datetime.fromisoformat(stamps.pop()) - datetime.now(UTC)) < timedelta(seconds=5)
