"""build_destinations (the composition entry point) and "where is my event" per destination."""

from __future__ import annotations

from datetime import datetime

from tests.conftest import eventually
from tests.destinations.conftest import destination
from tests.destinations.harness import LogHarness, message
from tests.destinations.receiver import Receiver, Reply
from trackd.destinations import build_destinations, open_lookup
from trackd.destinations.worker import DestinationWorker
from trackd.settings import Settings, SourceSettings


def settings_with(*destinations: object) -> Settings:
    return Settings(sources=(SourceSettings(name="web", write_keys=["wk"]),),
                    destinations=tuple(destinations))  # type: ignore[arg-type]


def test_a_new_destination_starts_at_the_end_of_the_log(
        harness: LogHarness, receiver: Receiver) -> None:
    before = harness.append([message("u", 0), message("u", 1)])
    settings = settings_with(destination(url=receiver.url))
    stages, _ = build_destinations(settings, harness.reader, harness.metrics, harness.root)
    [stage] = stages
    assert stage.name == "destination:hook"
    assert "destination:hook" in harness.reader.consumers()
    harness.start(stage)
    after = harness.append([message("u", 2)])
    eventually(lambda: receiver.accepted_ids() == after)
    harness.stop(stage)
    # a known destination carries on from its own position, not from the end
    later = harness.append([message("u", 3)])
    stages, _ = build_destinations(settings, harness.reader, harness.metrics, harness.root)
    harness.start(stages[0])
    eventually(lambda: receiver.accepted_ids() == after + later)
    assert not set(before) & set(receiver.accepted_ids())


def test_lookup_reports_each_state(harness: LogHarness, receiver: Receiver) -> None:
    settings = settings_with(
        destination("ok", receiver.url + "/ok"),
        destination("flaky", receiver.url + "/flaky", max_attempts=1000, backoff_min=30.0,
                    backoff_max=60.0),
        destination("picky", receiver.url + "/picky", consent_categories=["ads"]))
    receiver.rule = lambda r: Reply(503, body=b"down") if r.path == "/flaky" else None
    stages, lookup = build_destinations(settings, harness.reader, harness.metrics,
                                        harness.root)
    msg = message("u", 0, context={"consent": {"categoryPreferences": {"ads": False}}})
    [mid] = harness.append([msg])
    # nothing started yet: the message waits in the log for every destination
    answer = lookup.lookup(mid)
    assert answer["found"] is False
    assert {d["destination"]: (d["state"], d.get("in")) for d in answer["deliveries"]} == {
        "ok": ("pending", "log"), "flaky": ("pending", "log"), "picky": ("pending", "log")}
    for stage in stages:
        harness.start(stage)

    def states() -> dict[str, dict[str, object]]:
        return {d["destination"]: d for d in lookup.lookup(mid)["deliveries"]}

    eventually(lambda: {k: v["state"] for k, v in states().items()} == {
        "ok": "delivered", "flaky": "retrying", "picky": "skipped"})
    now = states()
    assert now["ok"]["status"] == 200 and now["ok"]["attempts"] == 1
    assert isinstance(now["ok"]["deliveredAt"], str)
    assert now["flaky"]["attempts"] == 1 and now["flaky"]["status"] == 503
    assert now["flaky"]["error"] == "HTTP 503: down"
    next_try = datetime.fromisoformat(str(now["flaky"]["nextTry"]))
    delivered_at = datetime.fromisoformat(str(now["ok"]["deliveredAt"]))
    assert (next_try - delivered_at).total_seconds() > 20
    assert now["picky"]["reason"] == "filtered by end-user consent: ads not granted"
    assert lookup.lookup(mid)["found"] is True
    assert lookup.lookup("no-such-id") == {"found": False, "deliveries": []}
    for stage in stages:
        harness.stop(stage)
    # offline (no server): the ledgers opened read-only give the same answer
    offline = open_lookup(settings, harness.reader, harness.root)
    try:
        assert {d["destination"]: d["state"] for d in offline.lookup(mid)["deliveries"]} == {
            "ok": "delivered", "flaky": "retrying", "picky": "skipped"}
    finally:
        offline.close()


def test_every_destination_is_its_own_consumer(harness: LogHarness, receiver: Receiver) -> None:
    settings = settings_with(destination("a", receiver.url + "/a"),
                             destination("b", receiver.url + "/b"))
    stages, _ = build_destinations(settings, harness.reader, harness.metrics, harness.root)
    assert [s.name for s in stages] == ["destination:a", "destination:b"]
    assert all(isinstance(s, DestinationWorker) for s in stages)
    for stage in stages:
        harness.start(stage)
    harness.append([message("u", n) for n in range(3)])
    eventually(lambda: len(receiver.accepted()) == 6)
    for name in ("destination:a", "destination:b"):
        eventually(lambda name=name: harness.reader.lag(name) == 0)  # type: ignore[misc]
    assert (harness.root / "destinations" / "a.db").exists()
    assert (harness.root / "destinations" / "b.db").exists()
