"""`trackd replay`: archived and dead-lettered messages sent again, through the CLI command."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.conftest import eventually
from tests.destinations.conftest import destination
from tests.destinations.harness import LogHarness, message
from tests.destinations.receiver import Receiver, Reply
from trackd.archive import archive_dir
from trackd.archive.stage import CONSUMER, ArchiveStage
from trackd.cli.replay import replay
from trackd.destinations.ledger import Ledger
from trackd.destinations.lookup import DeliveryLookup
from trackd.destinations.replay import parse_when, rewrite
from trackd.destinations.worker import DestinationWorker
from trackd.settings import ArchiveSettings

DAY = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
GRANTED = {"consent": {"categoryPreferences": {"ads": True}}}
DENIED = {"consent": {"categoryPreferences": {"ads": False}}}


def config(tmp_path: Path, url: str, extra: str = "") -> Path:
    path = tmp_path / "trackd.toml"
    path.write_text(f"""
[[sources]]
name = "web"
write_keys = ["wk_web"]

[[sources]]
name = "backend"
write_keys = ["wk_backend"]

[[destinations]]
name = "hook"
url = "{url}"
backoff_min = 0.01
backoff_max = 0.05
{extra}
""")
    return path


def run(harness: LogHarness, cfg: Path, *args: str) -> Result:
    return CliRunner().invoke(replay, ["--destination", "hook", *args, "--config", str(cfg),
                                       "--data-dir", str(harness.root)])


def archive(harness: LogHarness, batches: list[tuple[str, list[dict[str, object]]]]) -> None:
    stage = ArchiveStage(ArchiveSettings(flush_interval=0.05), harness.reader,
                         archive_dir(harness.root), harness.metrics, poll_interval=0.02)
    harness.start(stage)
    for source, messages in batches:
        harness.append(messages, source=source)
    eventually(lambda: harness.reader.lag(CONSUMER) == 0)
    harness.stop(stage)


@pytest.fixture
def archived(harness: LogHarness) -> dict[str, dict[str, object]]:
    m = {
        "a": message("u1", 0, event="A", received=DAY, context=GRANTED,
                     integrations={"hook": False}),
        "b": message("u1", 1, event="B", received=DAY + timedelta(minutes=1)),
        "c": message("u2", 2, event="B", received=DAY + timedelta(days=1), context=DENIED),
        "d": message("u3", 3, event="A", received=DAY + timedelta(minutes=30)),
    }
    archive(harness, [("web", [m["a"], m["b"], m["c"]]), ("backend", [m["d"]])])
    return m


def test_replay_resends_the_archive_with_integrations_rewritten(
        harness: LogHarness, receiver: Receiver, tmp_path: Path,
        archived: dict[str, dict[str, object]]) -> None:
    result = run(harness, config(tmp_path, receiver.url))
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(
        "Replayed 4 messages to hook: 4 delivered, 0 failed, 0 skipped")
    got = receiver.accepted()
    # in receivedAt order, across sources
    assert [m["messageId"] for m in got] == [archived[k]["messageId"] for k in "abdc"]
    assert all(m["integrations"] == {"All": False, "hook": True} for m in got)
    assert got[0]["context"] == GRANTED  # consent kept
    assert got[0]["properties"] == archived["a"]["properties"]


@pytest.mark.parametrize(("args", "keys"), [
    (["--source", "backend"], "d"),
    (["--event", "B"], "bc"),
    (["--source", "web", "--event", "A"], "a"),
    (["--since", "2026-03-01T10:00:30Z", "--until", "2026-03-02"], "bd"),
    (["--since", "2026-03-02"], "c"),
])
def test_replay_filters(harness: LogHarness, receiver: Receiver, tmp_path: Path,
                        archived: dict[str, dict[str, object]], args: list[str],
                        keys: str) -> None:
    result = run(harness, config(tmp_path, receiver.url), *args)
    assert result.exit_code == 0, result.output
    assert receiver.accepted_ids() == [archived[k]["messageId"] for k in keys]


def test_replay_keeps_consent_and_source_routing(
        harness: LogHarness, receiver: Receiver, tmp_path: Path,
        archived: dict[str, dict[str, object]]) -> None:
    cfg = config(tmp_path, receiver.url, 'sources = ["web"]\nconsent_categories = ["ads"]')
    result = run(harness, cfg)
    assert result.exit_code == 0, result.output
    # c: consent denied; d: backend is not routed to hook; b: no consent object, not gated
    assert receiver.accepted_ids() == [archived[k]["messageId"] for k in "ab"]
    assert "2 delivered, 0 failed, 2 skipped" in result.output


def test_nothing_to_replay(harness: LogHarness, receiver: Receiver, tmp_path: Path) -> None:
    result = run(harness, config(tmp_path, receiver.url))
    assert result.exit_code == 0
    assert "Nothing to replay: no archived messages match." in result.output
    result = run(harness, config(tmp_path, receiver.url), "--dead-letters")
    assert "Nothing to replay: no dead letters match." in result.output


def test_failed_replay_exits_non_zero_with_the_reason(
        harness: LogHarness, receiver: Receiver, tmp_path: Path,
        archived: dict[str, dict[str, object]]) -> None:
    receiver.reply(400)
    result = run(harness, config(tmp_path, receiver.url), "--source", "backend")
    assert result.exit_code == 1
    assert "Replayed 1 message to hook: 0 delivered, 1 failed, 0 skipped" in result.output
    assert "last error: HTTP 400" in result.output
    assert len(receiver.requests) == 1  # a 4xx is not retried


def test_replay_retries_retryable_failures(
        harness: LogHarness, receiver: Receiver, tmp_path: Path,
        archived: dict[str, dict[str, object]]) -> None:
    receiver.script(Reply(503), Reply(429, retry_after="0"))
    result = run(harness, config(tmp_path, receiver.url), "--source", "backend")
    assert result.exit_code == 0, result.output
    assert [r.status for r in receiver.requests] == [503, 429, 200]


def test_dead_letters_then_replay(harness: LogHarness, receiver: Receiver, tmp_path: Path,
                                  make_worker: Callable[..., DestinationWorker]) -> None:
    receiver.reply(500)
    worker = make_worker(destination(url=receiver.url, max_attempts=2))
    sent = harness.append([message("u1", n) for n in range(3)] + [message("u2", 9)])
    eventually(lambda: worker.ledger.counts() == {"dead": 4})
    [row] = worker.ledger.find(sent[0])
    assert row["error"].startswith("HTTP 500") and row["attempts"] == 2
    harness.stop(worker)
    receiver.reply(200)
    result = run(harness, config(tmp_path, receiver.url), "--dead-letters", "--source", "web")
    assert result.exit_code == 0, result.output
    assert "Replayed 4 messages to hook: 4 delivered" in result.output
    assert receiver.accepted_ids() == sent
    assert all(m["integrations"] == {"All": False, "hook": True} for m in receiver.accepted())
    lookup = DeliveryLookup({"hook": Ledger(worker.ledger.path, readonly=True)})
    [entry] = lookup.lookup(sent[0])["deliveries"]
    assert (entry["state"], entry["status"], entry.get("replayed")) == ("delivered", 200, True)
    lookup.close()
    again = run(harness, config(tmp_path, receiver.url), "--dead-letters")
    assert "Nothing to replay: no dead letters match." in again.output


def test_unknown_destination_and_bad_times_are_one_line_errors(
        harness: LogHarness, receiver: Receiver, tmp_path: Path) -> None:
    cfg = config(tmp_path, receiver.url)
    result = CliRunner().invoke(replay, ["--destination", "nope", "--config", str(cfg),
                                         "--data-dir", str(harness.root)])
    assert result.exit_code == 1
    assert "unknown destination 'nope' (destinations: hook)" in result.output
    assert "Traceback" not in result.output
    result = run(harness, cfg, "--since", "last tuesday")
    assert result.exit_code == 2 and "not a time" in result.output


NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("7d", NOW - timedelta(days=7)),
    ("12h", NOW - timedelta(hours=12)),
    ("30m", NOW - timedelta(minutes=30)),
    ("90s", NOW - timedelta(seconds=90)),
    ("2w", NOW - timedelta(weeks=2)),
    ("1.5h", NOW - timedelta(minutes=90)),
    ("2026-03-01", datetime(2026, 3, 1, tzinfo=UTC)),
    ("2026-03-01T12:30:00Z", datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
    ("2026-03-01T12:30:00", datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
    ("2026-03-01T12:30:00+02:00", datetime(2026, 3, 1, 10, 30, tzinfo=UTC)),
])
def test_parse_when(text: str, expected: datetime) -> None:
    assert parse_when(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "7", "7y", "-1d"])
def test_parse_when_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_when(text, NOW)


def test_rewrite_replaces_integrations_and_keeps_the_rest() -> None:
    body = b'{"messageId":"m","integrations":{"All":true,"x":false},"context":{"consent":1}}'
    assert rewrite(body, "Hook") == {"messageId": "m", "integrations": {"All": False,
                                                                        "Hook": True},
                                     "context": {"consent": 1}}
    assert rewrite(b"[1]", "Hook") is None and rewrite(b"nope", "Hook") is None
