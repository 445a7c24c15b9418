"""Ingestor.batch in process: the body decoded whole, the items' bytes as sent read only when
needed (size limit, quarantine), and the step-by-step path for bodies that do not decode whole.
"""

from __future__ import annotations

import asyncio
import gc
import json
from typing import Any

import msgspec
import pytest

from tests.gateway.helpers import Captured
from trackd.errors import AuthenticationError, InvalidRequest, RequestRejected
from trackd.gateway.ingest import Ingestor, Outcome, without_write_key
from trackd.log.records import Entry, Refused, Violation
from trackd.observability import Registry
from trackd.settings import SourceSettings

SOURCES = (SourceSettings(name="web", write_keys=["wk"]),)
GOOD = b'{"type":"track","userId":"u","event":"E","messageId":"good"}'


def batch(body: bytes, key: str | None = "wk") -> tuple[Outcome, Captured]:
    log = Captured()
    ingestor = Ingestor(SOURCES, log, Registry())  # type: ignore[arg-type]
    outcome = asyncio.run(ingestor.batch(body, key, "10.0.0.1"))
    return outcome, log


def envelope(*items: bytes, pad: int = 0) -> bytes:
    return b'{"batch":[' + b",".join(items) + b'],"pad":"' + b"p" * pad + b'"}'


def rejected(outcome: Outcome) -> list[tuple[int, str]]:
    return [(r["index"], r["error"]["message"]) for r in outcome.body.get("rejected", [])]


def test_a_refused_item_is_kept_without_its_write_key() -> None:
    bad = b'{"type": "track", "writeKey": "wk", "userId": "u", "event": "", "x": "\\u00e9"}'
    outcome, log = batch(envelope(GOOD, bad))
    assert rejected(outcome) == [(1, "Missing required field: event")]
    # the other members exactly as sent (escapes included), the secret gone
    assert [r.body for r in log.refused] == [
        b'{"type":"track","userId":"u","event":"","x":"\\u00e9"}']


def test_without_write_key_drops_every_write_key_member() -> None:
    assert without_write_key(b'{"a":1,"writeKey":"wk","writeKey":"wk2","b":[1, 2]}') == \
        b'{"a":1,"b":[1, 2]}'


def test_without_write_key_leaves_other_bytes_alone() -> None:
    for body in (b'{ "a" : 1 }', b"[1]", b"not json"):
        assert without_write_key(body) == body


@pytest.mark.parametrize("pad", [0, 40_000], ids=["small-body", "over-32KB-body"])
def test_a_refused_item_is_kept_byte_for_byte_as_sent(pad: int) -> None:
    bad = b'{ "type" : "track",\n  "userId" : "u", "event": "",  "x": "\\u00e9" }'
    outcome, log = batch(envelope(GOOD, bad, b"  [1,2] ", pad=pad))
    assert outcome.status == 200
    assert rejected(outcome) == [(1, "Missing required field: event"),
                                 (2, "Message must be a JSON object")]
    assert [r.body for r in log.refused] == [bad, b"[1,2]"]
    assert [e.message_id for e in log.entries] == ["good"]


def test_the_size_limit_counts_the_item_as_sent_whitespace_included() -> None:
    small = b'{"type":"track","userId":"u","event":"E"}'
    spaced = small[:-1] + b" " * (32769 - len(small)) + b"}"
    assert len(spaced) == 32769 and len(msgspec.json.encode(json.loads(spaced))) < 100
    at_limit = spaced[:-2] + b"}"
    outcome, log = batch(envelope(spaced, at_limit))
    assert rejected(outcome) == [(0, "Event payload exceeds 32KB limit")]
    assert log.refused[0].body == spaced
    assert len(log.entries) == 1


def test_the_last_batch_key_wins_for_items_and_their_bytes() -> None:
    body = b'{"batch":[' + GOOD + b'],"batch":[{"type":"page","userId":"u"},  7  ]}'
    outcome, log = batch(body)
    assert rejected(outcome) == [(1, "Message must be a JSON object")]
    assert [e.type for e in log.entries] == ["page"]
    assert log.refused[0].body == b"7"


def test_accepted_items_are_stored_exactly_as_the_encoder_writes_them() -> None:
    item = {"type": "identify", "userId": 42, "traits": {"a": [1, {"b": 2}]}, "custom": None,
            "writeKey": "wk", "messageId": "m1", "timestamp": "2024-05-01T12:00:00+02:00"}
    outcome, log = batch(json.dumps({"batch": [item], "sentAt": "2024-05-01T10:00:01Z"},
                                    indent=2).encode())
    assert outcome == Outcome(200, {"success": True, "accepted": 1})
    [entry] = log.entries
    stored: dict[str, Any] = msgspec.json.decode(entry.body)
    assert entry.body == msgspec.json.encode(stored)
    assert list(stored) == ["type", "userId", "traits", "custom", "messageId", "timestamp",
                            "context", "receivedAt", "sentAt", "originalTimestamp", "version"]
    assert stored["userId"] == "42" and stored["context"] == {"ip": "10.0.0.1"}
    assert stored["originalTimestamp"] == "2024-05-01T12:00:00+02:00"


@pytest.mark.parametrize(("body", "key", "error", "message"), [
    (envelope(GOOD, b'{"type":"track","userId":"\xff"}'), "wk", InvalidRequest,
     "Body is not valid JSON"),
    (b'{"batch":[' + GOOD, "wk", InvalidRequest, "Body is not valid JSON"),
    (b"[" + GOOD + b"]", "wk", InvalidRequest, "Body must be a JSON object"),
    (b"[" + GOOD + b"]", None, AuthenticationError,
     "Missing write key: send it as HTTP Basic user or writeKey"),
    (envelope(GOOD), "nope", AuthenticationError, "Invalid write key"),
], ids=["bad-utf8-in-an-item", "truncated", "not-an-object", "not-an-object-no-key",
        "unknown-key"])
def test_bodies_that_do_not_decode_whole_are_judged_step_by_step(
        body: bytes, key: str | None, error: type[RequestRejected], message: str) -> None:
    with pytest.raises(error) as refused:
        batch(body, key)
    assert refused.value.message == message


def test_an_item_nested_past_the_decoders_limit_makes_the_body_not_json() -> None:
    deep = b'{"type":"track","userId":"u","event":"E","p":' + b"[" * 2000 + b"]" * 2000 + b"}"
    with pytest.raises(InvalidRequest) as refused:
        batch(envelope(GOOD, deep))
    assert refused.value.message == "Body is not valid JSON"


def test_the_decoded_items_are_freed_before_waiting_for_the_commit() -> None:
    # They take several times the body's memory, and many requests may wait at once.
    class Inspecting(Captured):
        async def append(self, entries: list[Entry], refused: list[Refused],
                         violations: list[Violation] | None = None) -> None:
            await super().append(entries, refused, violations)
            gc.collect()
            self.alive = [o for o in gc.get_objects()
                          if type(o) is list and o == ["decoded-item"]]

    item = b'{"type":"page","userId":"u","marker":["decoded-item"]}'
    for body, accepted in ((envelope(item, item), 2), (envelope(item, b"7", pad=40_000), 1)):
        log = Inspecting()
        asyncio.run(Ingestor(SOURCES, log, Registry()).batch(  # type: ignore[arg-type]
            body, "wk", None))
        assert (len(log.entries), log.alive) == (accepted, [])
