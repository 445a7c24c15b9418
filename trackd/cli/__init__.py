"""The `trackd` command: a thin shell over the app. Errors are one line and a non-zero exit."""

from __future__ import annotations

import sys

import click

from trackd.cli.common import CONTEXT
from trackd.cli.data import events, quarantine
from trackd.cli.plan import plan
from trackd.cli.privacy import privacy
from trackd.cli.query import query
from trackd.cli.replay import replay
from trackd.cli.send import send
from trackd.cli.serve import serve
from trackd.cli.status import status
from trackd.private import restrict_process


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="trackd", prog_name="trackd")
def cli() -> None:
    """trackd: self-hosted, Segment-compatible event tracking."""


for command in (serve, send, query, events, quarantine, replay, status, plan, privacy):
    cli.add_command(command)


def main() -> None:
    """Run the command; every error, a bad flag included, is one line on stderr."""
    restrict_process()  # every file a command creates is private to its user
    try:
        code = cli.main(prog_name="trackd", standalone_mode=False)
    except click.UsageError as exc:  # exit 2, as click does, but without the usage block
        where = exc.ctx.command_path if exc.ctx is not None else "trackd"
        click.echo(f"Error: {exc.format_message()} (see {where} --help)", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
