"""The ledger: intake is idempotent, plans keep order per user, states move as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from trackd.destinations.ledger import Intake, Ledger, ledger_path
from trackd.destinations.policy import Decision, State


def intake(mid: str, user: str, *, source: str = "web", refusal: str | None = None,
           event: str | None = "Clicked", received_at: str = "2026-01-01T00:00:00.000Z",
           body: bytes | None = None) -> Intake:
    return Intake(mid, source, f"user:{user}", "track", event, received_at,
                  body or f'{{"messageId":"{mid}"}}'.encode(), refusal)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "hook.db")


def ids(plan_batches: list[list[object]]) -> list[list[int]]:
    return [[d.id for d in batch] for batch in plan_batches]  # type: ignore[attr-defined]


def planned(ledger: Ledger, now: float = 100.0, **kw: object) -> list[list[str]]:
    plan = ledger.plan(now, busy=kw.pop("busy", set()), slots=kw.pop("slots", 4),  # type: ignore[arg-type]
                       size=kw.pop("size", 1))  # type: ignore[arg-type]
    return [[d.body.decode().split('"')[3] for d in batch] for batch in plan.batches]


def test_adding_the_same_message_twice_keeps_one_row(ledger: Ledger) -> None:
    assert ledger.add([intake("a", "u1"), intake("b", "u1")], 1.0) == 2
    assert ledger.add([intake("a", "u1"), intake("c", "u2")], 2.0) == 1
    assert ledger.add([intake("a", "u1", source="backend")], 2.0) == 1  # another source
    assert ledger.counts() == {"pending": 4}


def test_skipped_rows_keep_their_reason_and_no_body(ledger: Ledger) -> None:
    ledger.add([intake("a", "u1", refusal="filtered by end-user consent: ads not granted")], 1.0)
    [row] = ledger.find("a")
    assert row["state"] == "skipped" and row["error"].startswith("filtered by end-user consent")
    assert ledger.active() == 0
    assert planned(ledger) == []


def test_plan_takes_one_head_per_user_per_request(ledger: Ledger) -> None:
    ledger.add([intake("a1", "a"), intake("a2", "a"), intake("b1", "b"), intake("c1", "c")], 1.0)
    assert planned(ledger, slots=4, size=1) == [["a1"], ["b1"], ["c1"]]
    assert planned(ledger, slots=2, size=1) == [["a1"], ["b1"]]


def test_plan_batches_keep_a_users_rows_together_and_in_order(ledger: Ledger) -> None:
    ledger.add([intake("a1", "a"), intake("b1", "b"), intake("a2", "a"), intake("a3", "a"),
                intake("c1", "c")], 1.0)
    assert planned(ledger, slots=4, size=3) == [["a1", "a2", "a3"], ["b1", "c1"]]
    # a user never spans two requests: a's rows that do not fit wait for the next plan
    assert planned(ledger, slots=4, size=2) == [["a1", "a2"], ["b1", "c1"]]


def test_busy_users_are_left_out(ledger: Ledger) -> None:
    ledger.add([intake("a1", "a"), intake("a2", "a"), intake("b1", "b")], 1.0)
    assert planned(ledger, busy={"user:a"}) == [["b1"]]


def test_a_retrying_head_holds_back_its_user_only(ledger: Ledger) -> None:
    ledger.add([intake("a1", "a"), intake("a2", "a"), intake("b1", "b")], 1.0)
    [a1] = [r for r in ledger.plan(100.0, busy=set(), slots=1, size=1).batches[0]]
    ledger.failed([a1.id], lambda attempts, age: Decision(State.RETRYING, 200.0), 503,
                  "HTTP 503", 100.0)
    plan = ledger.plan(150.0, busy=set(), slots=4, size=1)
    assert [[d.user_key for d in b] for b in plan.batches] == [["user:b"]]
    assert plan.wake_at == 200.0
    assert planned(ledger, now=200.0, size=5) == [["a1", "a2", "b1"]]


def test_failed_then_dead_then_delivered_by_replay(ledger: Ledger) -> None:
    ledger.add([intake("a1", "a")], 10.0)
    [[row]] = ledger.plan(10.0, busy=set(), slots=1, size=1).batches
    seen: list[tuple[int, float]] = []

    def decide(attempts: int, age: float) -> Decision:
        seen.append((attempts, age))
        return Decision(State.RETRYING, 20.0) if attempts < 2 else Decision(State.DEAD, 0.0)

    [failed] = ledger.failed([row.id], decide, 500, "HTTP 500: boom", 15.0)
    assert not failed.dead
    [info] = ledger.find("a1")
    assert (info["state"], info["attempts"], info["next_try"], info["status"]) == (
        "retrying", 1, 20.0, 500)
    [failed] = ledger.failed([row.id], decide, None, "timed out after 10s", 25.0)
    assert failed.dead
    assert seen == [(1, 5.0), (2, 15.0)]
    [info] = ledger.find("a1")
    assert (info["state"], info["attempts"], info["error"], info["done_at"]) == (
        "dead", 2, "timed out after 10s", 25.0)
    assert ledger.active() == 0
    [(dead_id, source, mid, body)] = ledger.dead_letters()
    assert (dead_id, source, mid) == (row.id, "web", "a1") and body == row.body
    ledger.replayed([dead_id], 200, 30.0)
    [info] = ledger.find("a1")
    assert (info["state"], info["replayed"], info["status"]) == ("delivered", 1, 200)
    assert ledger.dead_letters() == []


def test_delivered_rows_drop_their_body_and_are_pruned(ledger: Ledger) -> None:
    ledger.add([intake("a1", "a"), intake("b1", "b", refusal="no")], 10.0)
    [[row]] = ledger.plan(10.0, busy=set(), slots=1, size=1).batches
    ledger.delivered([row.id], 202, 11.0)
    [info] = ledger.find("a1")
    assert (info["state"], info["status"], info["attempts"], info["done_at"]) == (
        "delivered", 202, 1, 11.0)
    assert ledger.prune(before=10.5) == 1  # the skipped row (done at 10.0)
    assert ledger.prune(before=12.0) == 1
    assert ledger.find("a1") == []


def test_dead_letter_filters(ledger: Ledger) -> None:
    ledger.add([intake("a", "u", source="web", event="A", received_at="2026-01-01T10:00:00.000Z"),
                intake("b", "w", source="backend", event="B",
                       received_at="2026-01-02T10:00:00.000Z"),
                intake("c", "v", source="web", event="B",
                       received_at="2026-01-03T10:00:00.000Z")], 1.0)
    rows = [r for b in ledger.plan(2.0, busy=set(), slots=3, size=1).batches for r in b]
    ledger.failed([r.id for r in rows], lambda a, g: Decision(State.DEAD, 0.0), 400, "HTTP 400",
                  3.0)
    def mids(**kw: str) -> list[str]:
        return [m for _, _, m, _ in ledger.dead_letters(**kw)]  # type: ignore[arg-type]

    assert sorted(mids()) == ["a", "b", "c"]
    assert mids(source="web") == ["a", "c"]
    assert mids(event="B") == ["b", "c"]
    assert mids(since="2026-01-02T00:00:00.000Z") == ["b", "c"]
    assert mids(until="2026-01-02T00:00:00.000Z") == ["a"]


def test_big_bodies_split_batches(ledger: Ledger) -> None:
    big = b'{"messageId":"x","pad":"' + b"x" * 200_000 + b'"}'
    ledger.add([intake(f"m{i}", f"u{i}", body=big.replace(b'"x"', f'"m{i}"'.encode()))
                for i in range(3)], 1.0)
    plan = ledger.plan(2.0, busy=set(), slots=4, size=100)
    assert [len(b) for b in plan.batches] == [2, 1]


@pytest.mark.parametrize(("name", "file"), [
    ("hook", "hook.db"),
    ("Google_Analytics-2", "Google_Analytics-2.db"),
])
def test_ledger_path_of_safe_names(tmp_path: Path, name: str, file: str) -> None:
    assert ledger_path(tmp_path, name) == tmp_path / file


def test_ledger_path_of_unsafe_names_is_distinct(tmp_path: Path) -> None:
    a = ledger_path(tmp_path, "My Destination (Workspace)")
    b = ledger_path(tmp_path, "My Destination [Workspace]")
    assert a != b and a.parent == tmp_path and " " not in a.name
    assert ledger_path(tmp_path, "../etc").parent == tmp_path


def test_a_read_only_ledger_sees_what_the_writer_stored(ledger: Ledger) -> None:
    ledger.add([intake("a", "u")], 1.0)
    reader = Ledger(ledger.path, readonly=True)
    try:
        assert [r["message_id"] for r in reader.find("a")] == ["a"]
    finally:
        reader.close()
    assert ledger_path(ledger.path.parent, "hook") == ledger.path
