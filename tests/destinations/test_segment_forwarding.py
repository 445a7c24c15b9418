"""The `segment` type forwards to another trackd through /v1/batch with its own write key."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import Server, eventually
from tests.destinations.conftest import destination
from tests.destinations.harness import LogHarness, message
from trackd.destinations.worker import DestinationWorker
from trackd.log.reader import LogReader

SECOND = """
[server]
admin_token = "second-admin-token"

[[sources]]
name = "forwarded"
write_keys = ["wk_forwarded"]
"""


def stored(server: Server, message_ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    reader = LogReader(server.data_dir / "log")
    try:
        return {r.message_id: (r.source, json.loads(r.body))
                for mid in message_ids for r in reader.find(mid)}
    finally:
        reader.close()


def test_forwarding_lands_messages_in_the_second_trackd_log(
        harness: LogHarness, make_server: Callable[..., Server],
        make_worker: Callable[..., DestinationWorker]) -> None:
    second = make_server(SECOND, name="second")
    worker = make_worker(destination("fwd", second.url, type="segment",
                                     write_key="wk_forwarded", batch_size=20))
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    messages = [message("u1", n, received=an_hour_ago,
                        context={"consent": {"categoryPreferences": {"ads": True}}})
                for n in range(5)]
    messages.append(message(None, 9, kind="identify", anonymousId="anon-1",
                            traits={"plan": "pro"}))
    sent = harness.append(messages)
    eventually(lambda: len(stored(second, sent)) == len(sent), timeout=60)
    eventually(lambda: worker.ledger.counts() == {"delivered": len(sent)}, timeout=60)
    arrived = stored(second, sent)
    for original in messages:
        source, body = arrived[original["messageId"]]
        assert source == "forwarded"
        assert body["type"] == original["type"]
        # no sentAt is forwarded, so the second trackd keeps the corrected timestamp
        assert body["timestamp"] == original["timestamp"]
        assert body.get("userId") == original.get("userId")
        assert body["context"].get("consent") == original["context"].get("consent")
        assert "writeKey" not in body
    assert arrived[sent[-1]][1]["traits"] == {"plan": "pro"}


def test_a_wrong_write_key_is_dead_lettered_with_the_401(
        harness: LogHarness, make_server: Callable[..., Server],
        make_worker: Callable[..., DestinationWorker]) -> None:
    second = make_server(SECOND, name="second")
    worker = make_worker(destination("fwd", second.url, type="segment", write_key="wk_wrong"))
    [mid] = harness.append([message("u1", 0)])
    eventually(lambda: worker.ledger.counts().get("dead") == 1, timeout=60)
    [row] = worker.ledger.find(mid)
    assert row["status"] == 401 and "write key" in row["error"].lower()
