"""`trackd replay`: send archived (or dead-lettered) messages to a destination again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime

import click

from trackd.archive import archive_dir
from trackd.archive.reader import ArchiveScan
from trackd.cli.common import config_options, load_settings, one_line_errors
from trackd.cli.output import progress
from trackd.destinations import ledger_dir
from trackd.destinations.ledger import Ledger, ledger_path
from trackd.destinations.replay import Item, Replayer, Summary, parse_when
from trackd.destinations.senders import Sender, build_sender
from trackd.messages.enrich import iso


def _when(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_when(value, datetime.now(UTC))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


async def _send_all(replayer: Replayer, sender: Sender, items: Iterable[Item]) -> Summary:
    try:
        return await replayer.run(items)
    finally:
        await sender.aclose()


@click.command()
@click.option("--destination", "-d", "name", required=True,
              help="Destination name, as in trackd.toml.")
@click.option("--source", help="Only messages of this source.")
@click.option("--since", callback=_when,
              help="Received at or after: 2024-05-01, 2024-05-01T12:00:00Z, or 7d/12h/30m ago.")
@click.option("--until", callback=_when, help="Received before (same forms as --since).")
@click.option("--event", help="Only track calls with this event name.")
@click.option("--dead-letters", is_flag=True,
              help="Replay the destination's dead letters instead of the archive.")
@click.option("--attempts", type=click.IntRange(min=1), default=3, show_default=True,
              help="Tries per request before a message counts as failed.")
@config_options
@one_line_errors
def replay(name: str, source: str | None, since: datetime | None, until: datetime | None,
           event: str | None, dead_letters: bool, attempts: int, config_path: str | None,
           data_dir: str | None) -> None:
    """Re-send archived or dead-lettered messages to a destination.

    Each message goes out with integrations set to {"All": false, "<destination>": true};
    context.consent is kept. Works whether or not a server is running.
    """
    settings = load_settings(config_path, data_dir)
    dest = next((d for d in settings.destinations if d.name == name), None)
    if dest is None:
        known = ", ".join(d.name for d in settings.destinations) or "none configured"
        raise click.ClickException(f"unknown destination {name!r} (destinations: {known})")
    ledger: Ledger | None = None
    items: Iterable[Item]
    path = ledger_path(ledger_dir(settings.data_dir), dest.name)
    if dead_letters:
        what = "dead letters"
        rows = []
        if path.exists():
            ledger = Ledger(path)
            rows = ledger.dead_letters(source=source, event=event,
                                       since=iso(since) if since else None,
                                       until=iso(until) if until else None)
        items = [Item(s, m, body, i) for i, s, m, body in rows]
        total = len(rows)
    else:
        what = "archived messages"
        scan = ArchiveScan(archive_dir(settings.data_dir), source=source, since=since,
                           until=until, event=event)
        total = scan.count()
        items = (Item(a.source, a.message_id, a.body) for a in scan)
    if total == 0:
        click.echo(f"Nothing to replay: no {what} match.")
        return
    sender = build_sender(dest)
    try:
        with progress(total, f"Replaying {what} to {dest.name}") as advance:
            replayer = Replayer(dest, sender, attempts=attempts, ledger=ledger,
                                on_progress=advance)
            summary = asyncio.run(_send_all(replayer, sender, items))
    finally:
        if ledger is not None:
            ledger.close()
    click.echo(summary.line())
    if summary.failed:
        click.get_current_context().exit(1)
