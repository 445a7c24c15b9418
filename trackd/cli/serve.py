"""`trackd serve`."""

from __future__ import annotations

import json
import secrets
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from trackd.cli.common import config_options, load_settings, one_line_errors
from trackd.cli.events import lookup_command
from trackd.observability import LOG_LEVELS, configure_logging
from trackd.private import secure_data_dir
from trackd.server.supervisor import ServerInfo
from trackd.server.supervisor import serve as run_server
from trackd.settings import Settings


@click.command()
@config_options
@click.option("--host", help="Listen address (default 127.0.0.1).")
@click.option("--port", type=int, help="Listen port (default 8088; 0 picks a free one).")
@click.option("--workers", type=int, help="Gateway processes (one per core uses every core).")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False),
              help="Server log detail (default info: a line per notable event).")
@click.option("--ephemeral", is_flag=True,
              help="For tests: data in a temporary directory removed on exit, no fsync, "
                   "test endpoints, no warehouse, archive or destinations.")
@click.option("--write-key", help="--ephemeral: the write key of the default source "
                                  "(default: test) when the config names no source.")
@one_line_errors
def serve(config_path: str | None, data_dir: str | None, host: str | None, port: int | None,
          workers: int | None, log_level: str | None, ephemeral: bool,
          write_key: str | None) -> None:
    """Start the server: tracking API, pipeline and admin API."""
    overrides: dict[str, Any] = {k: v for k, v in
                                 {"host": host, "port": port, "workers": workers,
                                  "log_level": log_level}.items()
                                 if v is not None}
    if not ephemeral:
        if write_key is not None:
            raise click.UsageError("--write-key goes with --ephemeral")
        _run(load_settings(config_path, data_dir, overrides, persist=True), config_path, data_dir)
        return
    if data_dir is not None:
        raise click.UsageError("--ephemeral uses a temporary data dir: leave out --data-dir")
    from trackd.testing import ephemeral as mode

    with tempfile.TemporaryDirectory(prefix="trackd-ephemeral-") as temporary:
        mode.prepare(Path(temporary), write_key or mode.DEFAULT_WRITE_KEY)
        _run(mode.ephemeral(load_settings(config_path, temporary, overrides, persist=True)),
             config_path, None)


def _run(settings: Settings, config_path: str | None, data_dir: str | None) -> None:
    configure_logging(settings.server.log_level)
    secure_data_dir(settings.data_dir)
    run_server(settings, lambda info: _banner(settings, info, config_path, data_dir))
    click.echo("trackd stopped.")


def _banner(settings: Settings, info: ServerInfo, config_path: str | None,
            data_dir: str | None) -> None:
    base = f"http://{info.host}:{info.port}"
    click.echo(f"trackd is listening on {base} "
               f"({settings.server.workers} worker(s), data in {settings.data_dir})")
    for src in settings.sources:
        click.echo(f"  source {src.name}: write key {src.write_keys[0]}")
    if "admin_token" in settings.generated:
        # A secret: shown to the person at the terminal, never copied into a log file.
        kept = settings.data_dir / "credentials.json"
        shown = settings.server.admin_token if sys.stderr.isatty() else "(not shown here)"
        click.echo(f"  admin token: {shown} (kept in {kept})")
    if settings.sources:
        key = settings.sources[0].write_keys[0]
        message_id = f"first-{secrets.token_hex(4)}"
        body = json.dumps({"messageId": message_id, "userId": "user123",
                           "event": "Button Clicked", "properties": {"plan": "pro"}},
                          separators=(",", ":"))
        click.echo("Try it:")
        click.echo(f"  curl -u {shlex.quote(key + ':')} -H 'Content-Type: application/json' "
                   f"-d {shlex.quote(body)} {base}/v1/track")
        click.echo(f"  {lookup_command(message_id, config_path, data_dir)}")
    click.echo("Stop with Ctrl-C.", nl=True)
