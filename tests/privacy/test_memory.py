"""What the console keeps in memory forgets a deleted subject (live buffers, schema samples)."""

from __future__ import annotations

import json
from pathlib import Path

from trackd.console.counts import Counts
from trackd.console.live import Filter, LiveHub, Subscriber
from trackd.log.tail import Frame
from trackd.observability import Registry
from trackd.privacy.subjects import Subjects


def _frame(bodies: list[dict[str, object]]) -> Frame:
    raw = [json.dumps(b).encode() for b in bodies]
    return Frame("gw0", len(raw), "web", "2024-05-01T12:00:00.000Z",
                 [str(b["messageId"]) for b in bodies], [str(b["type"]) for b in bodies],
                 json.dumps([len(r) for r in raw]).encode(), b"".join(raw))


BODIES: list[dict[str, object]] = [
    {"type": "track", "event": "Paid", "userId": "gone-user-1", "messageId": "m1",
     "properties": {"buyer": "gone-user-1"}},
    {"type": "track", "event": "Paid", "userId": "kept-user-2", "messageId": "m2",
     "properties": {"buyer": "kept-user-2"}},
]


def test_live_buffers_and_schema_samples_drop_the_subject(tmp_path: Path) -> None:
    matches = Subjects(user_ids={"gone-user-1"}).pattern().search
    hub = LiveHub(Registry(), [])
    subscriber = Subscriber(Filter(), 100)
    hub.subscribers.add(subscriber)
    hub._dispatch([hub._accepted(_frame(BODIES))][0])
    assert len(subscriber.buffer) == 2
    assert hub.forget(lambda line: matches(line) is not None) == 1
    assert [b"kept-user-2" in line for line in subscriber.buffer] == [True]

    counts = Counts(tmp_path / "counts.json")
    counts.add([_frame(BODIES)], [])
    counts.save()
    assert b"gone-user-1" in (tmp_path / "counts.json").read_bytes()
    assert counts.forget(lambda text: matches(text) is not None) >= 1
    saved = (tmp_path / "counts.json").read_bytes()
    assert b"gone-user-1" not in saved and b"kept-user-2" in saved
