"""Commands that read data: events show, quarantine (`query` has its own module).

When a server runs on the data dir they ask it over its admin socket (DuckDB allows one
writing process); otherwise they open the files themselves.
"""

from __future__ import annotations

from urllib.parse import quote

import click
from rich.text import Text

from trackd.cli.common import (
    config_options,
    load_settings,
    not_empty,
    one_line_errors,
    require_data,
)
from trackd.cli.events import stage_rows, summary
from trackd.cli.output import (
    console,
    format_option,
    print_json,
    print_plain,
    table,
    write_rows,
)
from trackd.cli.remote import admin_request, fail_from
from trackd.log.protocol import Quarantined
from trackd.settings import Settings


@click.group()
def events() -> None:
    """Look up events."""


@events.command("show")
@click.argument("message_id", callback=not_empty)
@config_options
@format_option
@one_line_errors
def show(message_id: str, config_path: str | None, data_dir: str | None, fmt: str) -> None:
    """Where is my event: accepted or quarantined, deduplicated, loaded, delivered.

    The table format starts with a one-line summary, then a line per stage and the message
    as stored; json is the whole answer of GET /api/v1/events/{messageId}; csv the stage lines.
    """
    settings = load_settings(config_path, data_dir)
    # Percent-encoded whole: an id with `?`, `#`, `%`, `/` or a control character is sent
    # exactly and decoded back to itself by the server.
    response = admin_request(settings, "GET", f"/api/v1/events/{quote(message_id, safe='')}")
    if response is not None:
        if response.status_code not in (200, 404):
            raise fail_from(response)
        answer = response.json()
    else:
        from trackd.app import offline_where_is

        require_data(settings)
        answer = offline_where_is(settings, message_id)
    if fmt == "json":
        print_json(answer)
    elif answer.get("found"):
        columns, rows = stage_rows(answer)
        if fmt == "csv":
            write_rows(columns, rows, fmt, str)
        else:
            out = console()
            if out.is_terminal:
                out.print(Text(summary(answer), style="bold"))
                out.print(table(columns, rows))
            else:
                print_plain(Text(summary(answer)), table(columns, rows, plain=True))
            if "message" in answer:
                print_json(answer["message"])
    if not answer.get("found"):
        raise click.ClickException(f"no message with messageId {message_id!r} was found")


@click.command()
@config_options
@click.option("--source", help="Only this source.")
@click.option("--limit", type=click.IntRange(min=1, max=1000), default=50, show_default=True,
              help="Most messages listed (newest first).")
@format_option
@one_line_errors
def quarantine(config_path: str | None, data_dir: str | None, source: str | None,
               limit: int, fmt: str) -> None:
    """List refused messages with their reasons (newest first)."""
    settings = load_settings(config_path, data_dir)
    require_data(settings)
    from trackd.log.choice import on_nats

    if on_nats(settings):  # the quarantine is on the NATS stream, not in this data dir
        found = _nats_quarantine(settings, source, limit)
    else:
        from trackd.log.reader import LogReader

        reader = LogReader(settings.data_dir / "log")
        try:
            found = reader.quarantined(source=source, limit=limit)
        finally:
            reader.close()
    if fmt == "json":
        print_json(found)
        return
    columns = ["receivedAt", "source", "messageId", "batchIndex", "reason"]
    rows = [[row[c] for c in columns] for row in found]
    write_rows(columns, rows, fmt, lambda n: f"({n} quarantined message{'s' * (n != 1)}"
               f"{'; --limit ' + str(limit) + ' reached' if n == limit else ''})")


def _nats_quarantine(settings: Settings, source: str | None, limit: int) -> list[Quarantined]:
    import asyncio

    from trackd.log.jetstream import JetStreamLog

    async def ask() -> list[Quarantined]:
        log = JetStreamLog(settings.log)
        await log.start()
        try:
            return await log.quarantined(source=source, limit=limit)
        finally:
            await log.close()

    return asyncio.run(ask())
