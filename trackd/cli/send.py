"""`trackd send KIND`: send one message to a running server (a first test from the shell)."""

from __future__ import annotations

import json
from typing import Any

import click
import httpx

from trackd.cli.common import config_options, load_settings, one_line_errors
from trackd.server.supervisor import read_server_info

KINDS = ("track", "identify", "page", "screen", "group", "alias")


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


@click.command()
@click.argument("kind", type=click.Choice(KINDS))
@config_options
@click.option("--url", help="Server base URL (default: the server running on this data dir).")
@click.option("--write-key", help="Write key (default: the first source's).")
@click.option("--user-id")
@click.option("--anonymous-id")
@click.option("--event", help="Event name (track).")
@click.option("--name", help="Page or screen name.")
@click.option("--group-id", help="Group id (group).")
@click.option("--previous-id", help="Previous id (alias).")
@click.option("--properties", callback=_json_object, help="JSON object (track/page/screen).")
@click.option("--traits", callback=_json_object, help="JSON object (identify/group).")
@one_line_errors
def send(kind: str, config_path: str | None, data_dir: str | None, url: str | None,
         write_key: str | None, user_id: str | None, anonymous_id: str | None,
         event: str | None, name: str | None, group_id: str | None, previous_id: str | None,
         properties: dict[str, Any] | None, traits: dict[str, Any] | None) -> None:
    """Send one KIND message and print the server's answer."""
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
    try:
        response = httpx.post(f"{url.rstrip('/')}/v1/{kind}", json=message, auth=(key, ""),
                              timeout=30)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"could not reach {url}: {exc}") from None
    click.echo(f"{response.status_code} {response.text}")
    if response.status_code != 200:
        raise SystemExit(1)
