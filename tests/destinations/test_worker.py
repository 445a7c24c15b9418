"""A destination worker on a real log, posting to a real HTTP receiver."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import pytest

from tests.conftest import eventually
from tests.destinations.conftest import destination
from tests.destinations.harness import LogHarness, message
from tests.destinations.receiver import Received, Receiver, Reply
from tests.destinations.test_worker_edges import metric
from trackd.destinations.lookup import DeliveryLookup
from trackd.destinations.worker import DestinationWorker

MakeWorker = Callable[..., DestinationWorker]


def per_user(messages: list[dict[str, Any]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for m in messages:
        out.setdefault(m["userId"], []).append(m["properties"]["n"])
    return out


def in_order(messages: list[dict[str, Any]]) -> bool:
    return all(ns == sorted(ns) for ns in per_user(messages).values())


def some(users: list[str], count: int, start: int = 0, **fields: Any) -> list[dict[str, Any]]:
    return [message(u, n, **fields) for n in range(start, start + count) for u in users]


def test_every_message_arrives_once_in_order_per_user(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    worker = make_worker(destination(url=receiver.url + "/hook", concurrency=4))
    sent = harness.append(some(["u1", "u2", "u3"], 20))
    eventually(lambda: len(receiver.accepted()) >= len(sent))
    accepted = receiver.accepted()
    assert sorted(m["messageId"] for m in accepted) == sorted(sent)
    assert in_order(accepted)
    assert all(r.path == "/hook" and "batch" not in r.json() for r in receiver.requests)
    eventually(lambda: worker.ledger.counts() == {"delivered": 60})
    assert harness.reader.lag(worker.name) == 0


def test_batches_hold_up_to_batch_size_messages_in_order(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    make_worker(destination(url=receiver.url, batch_size=10, linger=0.01))
    sent = harness.append(some(["u1", "u2"], 15))
    eventually(lambda: len(receiver.accepted()) >= len(sent))
    assert sorted(receiver.accepted_ids()) == sorted(sent)
    assert all(1 <= len(r.json()["batch"]) <= 10 for r in receiver.requests)
    assert in_order(receiver.accepted())


def test_a_partial_batch_lingers_to_fill_up_and_a_full_one_goes_at_once(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    # A linger far longer than the test: the first message waits for the others however
    # late they come, and the full batch goes without waiting the linger out.
    worker = make_worker(destination(url=receiver.url, batch_size=5, linger=3600))
    sent = harness.append([message("u1", 0)])
    sent += harness.append([message("u1", n) for n in range(1, 5)])
    eventually(lambda: len(receiver.accepted()) == 5)
    [request] = receiver.requests
    assert [m["properties"]["n"] for m in request.json()["batch"]] == [0, 1, 2, 3, 4]
    # The request's 5 messages are counted, each delivered with the request's status.
    eventually(lambda: metric(harness, "trackd_destination_delivered_total") == 5)
    assert [worker.ledger.find(m)[0]["status"] for m in sent] == [200] * 5


def test_a_lone_partial_batch_goes_once_its_linger_is_over(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    make_worker(destination(url=receiver.url, batch_size=5, linger=0.2))
    harness.append([message("u1", 0)])
    eventually(lambda: len(receiver.accepted()) == 1)
    [request] = receiver.requests
    assert [m["properties"]["n"] for m in request.json()["batch"]] == [0]


def test_the_receiver_verifies_the_hmac_signature(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    def verify(request: Received) -> Reply:
        expected = "sha256=" + hmac.new(b"hook-secret", request.body,
                                        hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(request.headers.get("x-trackd-signature", ""), expected)
        return Reply(200 if ok else 401)

    receiver.rule = verify
    make_worker(destination(url=receiver.url, secret="hook-secret",
                            headers={"X-Env": "test"}))
    sent = harness.append(some(["u1"], 5))
    eventually(lambda: len(receiver.accepted()) == len(sent))
    assert all(r.status == 200 for r in receiver.requests)
    assert all(r.headers["x-env"] == "test" for r in receiver.requests)


def test_an_outage_then_recovery_delivers_every_message_once_in_order(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    receiver.reply(500)
    worker = make_worker(destination(url=receiver.url, max_attempts=1000, concurrency=3))
    sent = harness.append(some(["u1", "u2", "u3"], 10))
    eventually(lambda: len(receiver.requests) >= 15)  # the destination is failing for a while
    assert receiver.accepted() == []
    eventually(lambda: worker.ledger.counts().get("retrying", 0) > 0)
    receiver.reply(200)
    eventually(lambda: len(receiver.accepted()) >= len(sent))
    ids = receiver.accepted_ids()
    assert sorted(ids) == sorted(sent) and len(set(ids)) == len(ids)
    assert in_order(receiver.accepted())
    eventually(lambda: worker.ledger.counts() == {"delivered": 30})


def test_retry_after_is_honoured(harness: LogHarness, receiver: Receiver,
                                 make_worker: MakeWorker) -> None:
    receiver.script(Reply(429, retry_after="1"))
    make_worker(destination(url=receiver.url, backoff_min=0.01, backoff_max=0.02))
    harness.append([message("u1", 0)])
    eventually(lambda: len(receiver.accepted()) == 1)
    first, second = receiver.requests
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.9  # the backoff alone would have retried in 0.02 s


def test_a_4xx_dead_letters_at_once_and_others_proceed(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    receiver.rule = lambda r: Reply(400, body=b'{"error":"bad user"}') if any(
        m["userId"] == "bad" for m in r.messages()) else None
    worker = make_worker(destination(url=receiver.url))
    bad = harness.append([message("bad", 0), message("good", 0), message("bad", 1),
                          message("good", 1)])[::2]
    eventually(lambda: len(receiver.accepted()) == 2)
    eventually(lambda: worker.ledger.counts().get("dead") == 2)
    assert sum(1 for r in receiver.requests if r.status == 400) == 2  # one attempt each
    lookup = DeliveryLookup({"hook": worker.ledger}, harness.reader)
    answer = lookup.lookup(bad[0])
    assert answer["found"] is True
    [entry] = answer["deliveries"]
    assert entry["state"] == "dead" and entry["status"] == 400 and entry["attempts"] == 1
    assert entry["error"] == 'HTTP 400: {"error":"bad user"}'


def test_a_user_waits_behind_its_retrying_message_while_others_proceed(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    failing = {"on": True}
    receiver.rule = lambda r: Reply(503) if failing["on"] and any(
        m["userId"] == "slow" for m in r.messages()) else None
    make_worker(destination(url=receiver.url, max_attempts=1000, concurrency=2))
    slow = harness.append([message("slow", n) for n in range(3)])
    fast = harness.append([message("fast", n) for n in range(5)])
    eventually(lambda: len(receiver.accepted()) == 5)
    eventually(lambda: sum(1 for r in receiver.requests if r.status == 503) >= 3)
    assert receiver.accepted_ids() == fast
    # only the slow user's first message was tried: the later ones wait behind it
    tried = {m["messageId"] for r in receiver.requests for m in r.messages()}
    assert slow[0] in tried and slow[1] not in tried and slow[2] not in tried
    failing["on"] = False
    eventually(lambda: len(receiver.accepted()) == 8)
    assert receiver.accepted_ids()[5:] == slow


def test_a_dead_destination_does_not_hold_back_a_healthy_one(
        harness: LogHarness, make_receiver: Callable[[], Receiver],
        make_worker: MakeWorker) -> None:
    healthy, dead = make_receiver(), make_receiver()
    dead.reply(hang=True)
    make_worker(destination("healthy", healthy.url))
    down = make_worker(destination("down", dead.url, timeout=30.0, max_attempts=1000),
                       stop_timeout=0.1)
    sent = harness.append(some(["u1", "u2", "u3", "u4", "u5"], 20))
    eventually(lambda: len(healthy.accepted()) == len(sent))
    assert sorted(healthy.accepted_ids()) == sorted(sent)
    assert dead.accepted() == []
    assert down.ledger.counts().get("delivered", 0) == 0
    eventually(lambda: down.ledger.active() == len(sent))  # all safely queued, none lost


def test_routing_sends_only_what_the_destination_may_receive(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    worker = make_worker(destination("Hook", receiver.url, sources=["web"],
                                     consent_categories=["ads"]))
    granted = {"consent": {"categoryPreferences": {"ads": True}}}
    denied = {"consent": {"categoryPreferences": {"ads": False}}}
    ok = message("u", 0, context=granted)
    no_consent = message("u", 1, context=denied)
    switched_off = message("u", 2, context=granted, integrations={"Hook": False})
    only_others = message("u", 3, context=granted, integrations={"All": False, "Other": True})
    only_us = message("u", 4, context=granted, integrations={"All": False, "Hook": {"x": 1}})
    unrelated = message("u", 5)  # no consent object: not gated
    harness.append([ok, no_consent, switched_off, only_others, only_us, unrelated])
    from_backend = message("u", 6, context=granted)
    harness.append([from_backend], source="backend")
    expected = [ok["messageId"], only_us["messageId"], unrelated["messageId"]]
    eventually(lambda: receiver.accepted_ids() == expected)
    eventually(lambda: worker.ledger.counts() == {"delivered": 3, "skipped": 4})
    lookup = DeliveryLookup({"Hook": worker.ledger}, harness.reader)
    reasons = {mid: lookup.lookup(mid)["deliveries"][0].get("reason") for mid in [
        no_consent["messageId"], switched_off["messageId"], only_others["messageId"],
        from_backend["messageId"]]}
    assert reasons == {
        no_consent["messageId"]: "filtered by end-user consent: ads not granted",
        switched_off["messageId"]: "disabled by the message's integrations object",
        only_others["messageId"]: "disabled by the message's integrations object",
        from_backend["messageId"]: "source backend is not routed to Hook",
    }


def test_a_restart_resumes_without_losing_or_repeating(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    receiver.reply(503)
    settings = destination(url=receiver.url, max_attempts=1000)
    first = make_worker(settings)
    sent = harness.append(some(["u1", "u2"], 5))
    eventually(lambda: first.ledger.active() == len(sent))
    eventually(lambda: len(receiver.requests) >= 4)
    harness.stop(first)
    sent += harness.append(some(["u1", "u3"], 3, start=10))  # arrives while the worker is stopped
    receiver.reply(200)
    second = make_worker(settings)
    eventually(lambda: len(receiver.accepted()) >= len(sent))
    ids = receiver.accepted_ids()
    assert sorted(ids) == sorted(sent) and len(set(ids)) == len(ids)
    assert in_order(receiver.accepted())
    eventually(lambda: second.ledger.counts() == {"delivered": len(sent)})


def test_metrics_count_delivered_retried_and_dead(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    receiver.rule = lambda r: Reply(400) if any(
        m["properties"]["n"] == 9 for m in r.messages()) else None
    receiver.script(Reply(500), Reply(500))
    worker = make_worker(destination(url=receiver.url))
    harness.append([message("u1", 0), message("u2", 1), message("u3", 9)])
    eventually(lambda: worker.ledger.counts() == {"delivered": 2, "dead": 1})

    def value(name: str) -> float:
        values = harness.metrics.snapshot()[name]["values"]
        return float(dict((tuple(k), v) for k, v in values).get(("hook",), 0))

    # The counters move just after the ledger writes (not in the same step): wait for them.
    eventually(lambda: value("trackd_destination_delivered_total") == 2
               and value("trackd_destination_dead_total") == 1)
    assert value("trackd_destination_retried_total") == 2
    assert value("trackd_destination_dead_total") == 1
    assert value("trackd_destination_lag") == 0


def test_lag_counts_what_is_not_delivered_yet(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker) -> None:
    receiver.reply(503)
    worker = make_worker(destination(url=receiver.url, max_attempts=1000))
    harness.append(some(["u1"], 4))
    # In the ledger, and the log position moved past them.
    eventually(lambda: worker.ledger.active() == 4 and harness.reader.lag(worker.name) == 0)
    snapshot = harness.metrics.snapshot()
    lag = dict((tuple(k), v) for k, v in snapshot["trackd_destination_lag"]["values"])
    assert lag[("hook",)] == 4


def test_lag_never_counts_a_message_twice_while_the_log_position_moves(
        harness: LogHarness, receiver: Receiver, make_worker: MakeWorker,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Records go into the ledger first, then the log position moves past them: a metrics
    # snapshot in between must not count them in both (it waits for the move, or sees one).
    receiver.reply(503)
    in_window, release = threading.Event(), threading.Event()
    commit = harness.reader.commit

    def held_commit(*args: Any, **kwargs: Any) -> None:
        in_window.set()
        assert release.wait(60)
        commit(*args, **kwargs)

    monkeypatch.setattr(harness.reader, "commit", held_commit)
    worker = make_worker(destination(url=receiver.url, max_attempts=1000))
    harness.append(some(["u1"], 4))
    try:
        assert in_window.wait(30)
        assert worker.ledger.active() == 4 and harness.reader.lag(worker.name) == 4
        with ThreadPoolExecutor(1) as pool:
            snapshot = pool.submit(harness.metrics.snapshot)
            # The unfixed gauge answers at once (4 in the log + the same 4 in the ledger); a
            # fixed one may wait for the move to finish. Either way the answer is checked.
            with contextlib.suppress(FutureTimeout):
                snapshot.result(timeout=2)
            release.set()
            values = snapshot.result(timeout=30)["trackd_destination_lag"]["values"]
    finally:
        release.set()
    assert dict((tuple(k), v) for k, v in values)[("hook",)] == 4
