"""What a client is told when the log cannot take a request's messages: 503 with the reason
and the Retry-After of each kind of failure (busy, shutting down, storage failing), for single
and batch requests alike."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from trackd.errors import LogError, LogFull, Unavailable
from trackd.gateway.ingest import Ingestor
from trackd.log.records import Entry, Refused
from trackd.log.writer import LogWriter
from trackd.observability import Registry
from trackd.settings import SourceSettings

SOURCES = (SourceSettings(name="web", write_keys=["wk"]),)
TRACK = b'{"type":"track","userId":"u","event":"E","messageId":"m-1"}'
BATCH = b'{"batch":[' + TRACK + b"]}"


class Failing:
    """A log whose append fails as a log does when it is full or its storage fails."""

    def __init__(self, error: LogError) -> None:
        self.error = error

    async def append(self, entries: list[Entry], refused: list[Refused]) -> None:
        raise self.error


def refusal(writer: object, endpoint: str) -> Unavailable:
    ingestor = Ingestor(SOURCES, writer, Registry())  # type: ignore[arg-type]
    request = (ingestor.single("track", TRACK, "wk", None) if endpoint == "single"
               else ingestor.batch(BATCH, "wk", None))
    with pytest.raises(Unavailable) as raised:
        asyncio.run(request)
    return raised.value


@pytest.mark.parametrize("endpoint", ["single", "batch"])
@pytest.mark.parametrize(("error", "message", "retry_after"), [
    (LogFull("full"), "Server busy: retry later", 1),
    (LogError("disk I/O error"),
     "Could not store messages (storage unavailable): retry later", 5),
], ids=["full", "storage-failing"])
def test_a_log_that_cannot_take_the_messages_is_503_with_its_retry_after(
        endpoint: str, error: LogError, message: str, retry_after: int) -> None:
    refused = refusal(Failing(error), endpoint)
    assert (refused.status, refused.message, refused.retry_after) == (503, message, retry_after)


@pytest.mark.parametrize("endpoint", ["single", "batch"])
def test_a_closed_log_is_503_shutting_down_retry_after_2(endpoint: str, tmp_path: Path) -> None:
    async def closed() -> LogWriter:
        writer = LogWriter(tmp_path / f"{endpoint}.db", max_pending_bytes=1 << 20)
        writer.start(asyncio.get_running_loop())
        writer.close()
        return writer
    refused = refusal(asyncio.run(closed()), endpoint)
    assert (refused.status, refused.message, refused.retry_after) == (
        503, "Server shutting down: retry later", 2)
