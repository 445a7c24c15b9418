"""Deletion and destinations: the delete event with retries, ledgers and dead letters erased,
and no replay (archive or dead letters) that brings the subject back."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import Server, eventually
from tests.destinations.receiver import Received, Receiver, Reply
from tests.privacy.common import (
    CONFIG,
    RUN,
    files_holding,
    finished,
    loaded,
    regulate,
    sdk_traffic,
    warehouse_config,
)


def test_delete_event_is_retried_delivered_and_not_kept_and_replays_skip_the_subject(
        warehouse_url: str, make_server: Callable[..., Server], receiver: Receiver) -> None:
    doomed, kept = f"gone-{RUN}-user", f"stays-{RUN}-user"
    failed_once: list[Received] = []

    def rule(request: Received) -> Reply | None:
        message = request.messages()[0]
        if message.get("type") == "delete" and not failed_once:
            failed_once.append(request)
            return Reply(503)  # the delete event is retried like any message
        if message.get("userId") == doomed and message.get("type") == "track":
            return Reply(400)  # their tracks become dead letters
        return None

    receiver.rule = rule
    config = CONFIG.format(delay=0.2) + f"""
[[destinations]]
name = "hook"
url = "{receiver.url}/hook"
deletions = true
backoff_min = 0.1
backoff_max = 0.2

[[destinations]]
name = "quiet"
url = "{receiver.url}/quiet"
""" + warehouse_config(warehouse_url)
    server = make_server(config)
    sdk_traffic(server, [doomed, kept])
    eventually(lambda: loaded(server, [doomed, kept]), timeout=60)
    eventually(lambda: sum(1 for r in receiver.requests if r.path == "/hook") >= 10)
    assert files_holding(server.data_dir / "destinations", doomed.encode())

    done = finished(server, regulate(server, "DELETE_ONLY", [doomed]))
    assert [s["name"] for s in done["stores"]] == [
        "log", "warehouse", "archive", "memory", "ledgers", "destinations", "files"]
    deletes = [(r.path, r.messages()[0], r.status) for r in receiver.requests
               if r.messages()[0].get("type") == "delete"]
    # one per subject: the user, and the anonymous ids their identify and alias linked
    assert {p for p, _m, _s in deletes} == {"/hook"}  # not to "quiet" (no deletions = true)
    assert sorted(s or 0 for _p, _m, s in deletes) == [200, 200, 200, 503]
    delivered = [m for _p, m, s in deletes if s == 200]
    assert sorted((m.get("userId", ""), m.get("anonymousId", "")) for m in delivered) == [
        ("", f"anon-{doomed}"), ("", f"old-{doomed}"), (doomed, "")]
    assert all(m["type"] == "delete" and m["messageId"] and m["timestamp"] for m in delivered)
    assert files_holding(server.data_dir, doomed.encode()) == []  # ledgers included

    receiver.rule = None
    before = len(receiver.requests)
    for args in (["replay", "-d", "hook"], ["replay", "-d", "hook", "--dead-letters"]):
        server.run_cli(*args)
    replayed = receiver.requests[before:]
    assert replayed  # the archive still has the other user
    assert not [r for r in replayed if doomed in r.body.decode()]
    assert any(kept in r.body.decode() for r in replayed)
