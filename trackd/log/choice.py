"""Which log a process runs on: the embedded SQLite shards, or NATS JetStream (`[log] url`).

`open_source` gives the pipeline's `LogSource` (and the `LogReader` underneath on SQLite, for
what only the local shards can answer: the console's tail, byte sizes, test endpoints);
`as_source` lets a stage be handed either a `LogReader` (tests, the SQLite log) or a source.
"""

from __future__ import annotations

from pathlib import Path

from trackd.log.protocol import LogSource
from trackd.log.reader import LogReader
from trackd.log.sqlite import SqliteLog
from trackd.settings import Settings


def log_dir(settings: Settings) -> Path:
    return settings.data_dir / "log"


def on_nats(settings: Settings) -> bool:
    return bool(settings.log.url)


def open_source(settings: Settings) -> tuple[LogSource, LogReader | None]:
    """The pipeline's log (not started: on NATS, `await source.start()` connects)."""
    if on_nats(settings):
        from trackd.log.jetstream import JetStreamLog  # nats-py only where it is used

        return JetStreamLog(settings.log), None
    reader = LogReader(log_dir(settings))
    return SqliteLog(reader), reader


def as_source(log: LogReader | LogSource) -> LogSource:
    return SqliteLog(log) if isinstance(log, LogReader) else log


def reader_of(log: LogReader | LogSource) -> LogReader | None:
    """The SQLite reader behind `log`, or None on NATS."""
    if isinstance(log, LogReader):
        return log
    return log.reader if isinstance(log, SqliteLog) else None
