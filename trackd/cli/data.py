"""Commands that read data: query, events show, quarantine.

When a server runs on the data dir they ask it over its admin socket (DuckDB allows one
writing process); otherwise they open the files themselves.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import click
import httpx

from trackd.cli.common import config_options, load_settings, one_line_errors, require_data
from trackd.server.supervisor import read_server_info
from trackd.settings import Settings


def _admin(settings: Settings, method: str, path: str, **kw: Any) -> httpx.Response | None:
    info = read_server_info(settings)
    if info is None:
        return None
    transport = httpx.HTTPTransport(uds=info.admin_socket)
    with httpx.Client(transport=transport, base_url="http://trackd-admin", timeout=300) as c:
        return c.request(method, path, headers={
            "Authorization": f"Bearer {settings.server.admin_token}"}, **kw)


def _fail_from(response: httpx.Response) -> click.ClickException:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    return click.ClickException(message)


@click.command()
@click.argument("sql")
@config_options
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
@one_line_errors
def query(sql: str, config_path: str | None, data_dir: str | None, fmt: str) -> None:
    """Run read-only SQL on the warehouse and print the rows."""
    columns, rows = rows_of(load_settings(config_path, data_dir), sql)
    click.echo(_format(columns, rows, fmt), nl=False)


def rows_of(settings: Settings, sql: str) -> tuple[list[str], list[list[Any]]]:
    """Read-only SQL on the warehouse: through the running server, else from the file."""
    response = _admin(settings, "POST", "/api/v1/query", json={"sql": sql})
    if response is not None:
        if response.status_code != 200:
            raise _fail_from(response)
        doc = response.json()
        columns: list[str] = doc["columns"]
        return columns, [[r[c] for c in columns] for r in doc["rows"]]
    from trackd.app import offline_query_engine

    engine = offline_query_engine(settings)
    columns, raw = engine.query(sql)
    return columns, [list(r) for r in raw]


def _format(columns: list[str], rows: list[list[Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str,
                          indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows(["" if v is None else v for v in r] for r in rows)
        return out.getvalue()
    cells = [[("NULL" if v is None else str(v)) for v in r] for r in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    text = [line, "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
            + " |", line]
    text += ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) + " |"
             for r in cells]
    text += [line, f"({len(rows)} row{'s' if len(rows) != 1 else ''})"]
    return "\n".join(text) + "\n"


@click.group()
def events() -> None:
    """Look up events."""


@events.command("show")
@click.argument("message_id")
@config_options
@one_line_errors
def show(message_id: str, config_path: str | None, data_dir: str | None) -> None:
    """Where is my event: accepted or quarantined, deduplicated, loaded, delivered."""
    settings = load_settings(config_path, data_dir)
    response = _admin(settings, "GET", f"/api/v1/events/{message_id}")
    if response is not None:
        if response.status_code not in (200, 404):
            raise _fail_from(response)
        answer = response.json()
    else:
        from trackd.app import offline_where_is

        require_data(settings)
        answer = offline_where_is(settings, message_id)
    click.echo(json.dumps(answer, indent=2, default=str))
    if not answer.get("found"):
        raise click.ClickException(f"no message with messageId {message_id} was found")


@click.command()
@config_options
@click.option("--source", help="Only this source.")
@click.option("--limit", type=int, default=50, show_default=True)
@one_line_errors
def quarantine(config_path: str | None, data_dir: str | None, source: str | None,
               limit: int) -> None:
    """List refused messages with their reasons (newest first)."""
    settings = load_settings(config_path, data_dir)
    require_data(settings)
    from trackd.log.reader import LogReader

    reader = LogReader(settings.data_dir / "log")
    try:
        for row in reader.quarantined(source=source, limit=limit):
            click.echo(f"{row['receivedAt']}  {row['source']}  {row['messageId'] or '-'}  "
                       f"{row['reason']}")
    finally:
        reader.close()
