"""The live hub's bounded buffers and the running counts, on frames read from a real log."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

from trackd.console.counts import MAX_PROPERTIES, Counts
from trackd.console.live import Filter, LiveHub
from trackd.log.records import Entry, Refused
from trackd.log.tail import LogTail
from trackd.log.writer import LogWriter
from trackd.observability import Registry, render

NOW = "2026-05-01T12:30:15.000Z"


def write_log(log_dir: Path, messages: list[dict[str, object]], refused: int = 0) -> None:
    """Append `messages` (one request) and `refused` refused ones through the real writer."""

    async def run() -> None:
        writer = LogWriter(log_dir / "gw0.log.db", max_pending_bytes=1 << 26)
        writer.start(asyncio.get_running_loop())
        entries = [Entry("web", str(m["messageId"]), str(m["type"]), NOW,
                         json.dumps(m).encode()) for m in messages]
        bad = [Refused("web", f"bad-{i}", NOW, None, "Missing required field: userId",
                       b'{"event":"x","writeKey":"wk_secret"}') for i in range(refused)]
        await writer.append(entries, bad)
        await asyncio.to_thread(writer.close)

    log_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(run())


def tracks(n: int, start: int = 0, **properties: object) -> list[dict[str, object]]:
    return [{"type": "track", "event": "Played", "userId": f"u{i % 3}", "messageId": f"m{i}",
             "properties": {"song": f"s{i}", **properties}} for i in range(start, start + n)]


def test_a_subscriber_that_never_reads_gets_its_drops_counted_and_others_everything(
        tmp_path: Path) -> None:
    write_log(tmp_path, tracks(50), refused=2)
    tail = LogTail(tmp_path)
    metrics = Registry()
    hub = LiveHub(metrics, ["wk_secret"], capacity=20)

    async def run() -> tuple[list[bytes], list[bytes]]:
        stalled = hub.stream(Filter())
        reader = hub.stream(Filter.of({"user_id": "u1"}))
        assert (await anext(stalled)).endswith(b": connected\n\n")
        assert (await anext(reader)).endswith(b": connected\n\n")
        tail.sinks.append(hub.sink)
        await asyncio.to_thread(tail.poll)
        await asyncio.sleep(0.05)  # the dispatch runs on this loop
        got = await anext(reader)
        first = await anext(stalled)  # reads only now, after everything came
        await stalled.aclose()
        await reader.aclose()
        return [got], [first]

    (got,), (first,) = asyncio.run(run())
    events = [json.loads(line[6:]) for line in got.split(b"\n\n") if line.startswith(b"data:")]
    assert len(events) == 17 and {e["message"]["userId"] for e in events} == {"u1"}
    assert first.startswith(b": dropped 32\n\n")  # 52 messages, room for 20
    assert first.count(b"data: ") == 20
    assert 'trackd_live_dropped_total 32' in render([metrics.snapshot()])
    assert not hub.subscribers
    tail.stop()


def test_refused_messages_carry_their_reason_and_never_the_write_key(tmp_path: Path) -> None:
    write_log(tmp_path, [], refused=1)
    hub = LiveHub(Registry(), ["wk_secret"])
    tail = LogTail(tmp_path)

    async def run() -> bytes:
        stream = hub.stream(Filter.of({"status": "refused"}))
        await anext(stream)
        tail.sinks.append(hub.sink)
        await asyncio.to_thread(tail.poll)
        chunk = await anext(stream)
        await stream.aclose()
        return chunk

    chunk = asyncio.run(run())
    event = json.loads(chunk.split(b"\n\n")[0][6:])
    assert event["status"] == "refused" and event["reason"] == "Missing required field: userId"
    assert event["message"] == {"event": "x"}
    assert b"wk_secret" not in chunk
    tail.stop()


def test_counts_volume_catalogue_conflicts_and_persistence(tmp_path: Path) -> None:
    write_log(tmp_path / "log", tracks(5, plan="pro") + tracks(3, start=5, plan=7), refused=2)
    path = tmp_path / "counts.json"
    counts = Counts(path, sample_per_minute=100)
    tail = LogTail(tmp_path / "log")
    tail.sinks.append(counts.add)
    tail.poll()
    now = datetime(2026, 5, 1, 12, 40, tzinfo=UTC)
    assert counts.totals(now)["web"] == {"accepted": {"hour": 8, "day": 8},
                                         "refused": {"hour": 2, "day": 2}}
    volume = counts.volume("minute", now)
    assert volume["start"] == "2026-05-01T11:41:00Z" and volume["stepSeconds"] == 60
    assert sum(volume["series"]["web"]["accepted"]) == 8
    assert volume["series"]["web"]["accepted"][-11] == 8  # 12:30, ten minutes before 12:40
    [event] = counts.catalogue(now)
    assert (event["event"], event["counts"]) == ("Played", {"day": 8, "week": 8, "all": 8})
    played = counts.properties("web", "track", "Played")
    assert played is not None
    props = {p["name"]: p for p in played["properties"]}
    assert props["plan"]["types"] == {"string": 5, "integer": 3}
    assert props["plan"]["conflict"] and not props["song"]["conflict"]
    assert props["plan"]["presence"] == 1.0
    assert [s["value"] for s in props["plan"]["samples"]] == ["pro", "7"]
    counts.save()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    again = Counts(path)
    assert again.catalogue(now) == counts.catalogue(now)
    assert again.positions["frames"] == {"gw0": 8}
    tail.stop()


def test_the_catalogue_stays_bounded_whatever_is_sent(tmp_path: Path) -> None:
    wide = {f"p{i}": i for i in range(MAX_PROPERTIES + 50)}
    write_log(tmp_path, [{"type": "track", "event": "Wide", "userId": "u", "messageId": "w",
                          "properties": wide}])
    counts = Counts(None)
    tail = LogTail(tmp_path)
    tail.sinks.append(counts.add)
    tail.poll()
    found = counts.properties("web", "track", "Wide")
    assert found is not None and len(found["properties"]) == MAX_PROPERTIES
    tail.stop()
