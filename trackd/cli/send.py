"""`trackd send KIND`: send one message to a running server (a first test from the shell)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import click
import httpx

from trackd.cli.common import config_options, load_settings, one_line_errors
from trackd.cli.common import not_empty as _not_empty
from trackd.cli.events import lookup_command, shell_quote
from trackd.server.supervisor import read_server_info

KINDS = ("track", "identify", "page", "screen", "group", "alias")
# The flags each kind carries in Segment's spec; others are sent but warned about.
USES = {"track": {"event", "properties"}, "identify": {"traits"},
        "page": {"name", "properties"}, "screen": {"name", "properties"},
        "group": {"groupId", "traits"}, "alias": {"previousId"}}
FLAGS = {"event": "--event", "name": "--name", "groupId": "--group-id",
         "previousId": "--previous-id", "properties": "--properties", "traits": "--traits"}


def _json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        raise click.BadParameter("must be a JSON object, e.g. '{\"plan\": \"pro\"}'") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object")
    return parsed


def _http_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise click.BadParameter("must be an http(s) URL, e.g. http://127.0.0.1:8088")
    return value


@click.command()
@click.argument("kind", type=click.Choice(KINDS))
@config_options
@click.option("--url", callback=_http_url,
              help="Server base URL (default: the server running on this data dir).")
@click.option("--write-key", help="Write key (default: the first source's).")
@click.option("--user-id")
@click.option("--anonymous-id")
@click.option("--message-id", callback=_not_empty, help="messageId to send (default: a new UUID).")
@click.option("--event", help="Event name (track).")
@click.option("--name", help="Page or screen name.")
@click.option("--group-id", help="Group id (group).")
@click.option("--previous-id", help="Previous id (alias).")
@click.option("--properties", callback=_json_object, help="JSON object (track/page/screen).")
@click.option("--traits", callback=_json_object, help="JSON object (identify/group).")
@one_line_errors
def send(kind: str, config_path: str | None, data_dir: str | None, url: str | None,
         write_key: str | None, user_id: str | None, anonymous_id: str | None,
         message_id: str | None, event: str | None, name: str | None, group_id: str | None,
         previous_id: str | None,
         properties: dict[str, Any] | None, traits: dict[str, Any] | None) -> None:
    """Send one KIND message; print its messageId and the command that looks it up.

    A refusal or an unreachable server is one line on stderr and exit status 1.
    """
    settings = load_settings(config_path, data_dir)
    if url is None:
        info = read_server_info(settings)
        if info is None:
            raise click.ClickException("no server is running on this data dir; "
                                       "start one with `trackd serve` or pass --url")
        url = f"http://{info.host}:{info.port}"
    key = write_key or settings.sources[0].write_keys[0]
    fields = {"userId": user_id, "anonymousId": anonymous_id, "event": event, "name": name,
              "groupId": group_id, "previousId": previous_id, "properties": properties,
              "traits": traits}
    message = {k: v for k, v in fields.items() if v is not None}
    for field in sorted(set(message) & set(FLAGS) - USES[kind]):
        hint = " (it takes --traits)" if field == "properties" and "traits" in USES[kind] else ""
        click.echo(f"Warning: {kind} does not use {FLAGS[field]}{hint}; sent as given.",
                   err=True)
    mid = message_id or str(uuid.uuid4())
    message["messageId"] = mid
    try:
        response = httpx.post(f"{url.rstrip('/')}/v1/{kind}", json=message, auth=(key, ""),
                              timeout=30)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"could not reach {url}: {exc}") from None
    if response.status_code != 200:
        raise click.ClickException(f"refused ({response.status_code}): {_reason(response)}")
    click.echo(f"Sent {kind} with messageId {shell_quote(mid)}")
    click.echo(f"Look it up: {lookup_command(mid, config_path, data_dir)}")


def _reason(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text.strip()[:200] or response.reason_phrase
