"""The `trackd` command: a thin shell over the app. Errors are one line and a non-zero exit."""

from __future__ import annotations

import importlib
import sys

import click

from trackd.cli.common import CONTEXT
from trackd.private import restrict_process

# Each command's module is imported only when the command runs (or --help lists it): `trackd
# serve` starts its gateway workers before it loads the pipeline, and `trackd send` never
# loads the server.
COMMANDS = {"serve": "trackd.cli.serve:serve", "send": "trackd.cli.send:send",
            "query": "trackd.cli.query:query", "events": "trackd.cli.data:events",
            "quarantine": "trackd.cli.data:quarantine", "replay": "trackd.cli.replay:replay",
            "status": "trackd.cli.status:status", "plan": "trackd.cli.plan:plan",
            "privacy": "trackd.cli.privacy:privacy"}


class _Commands(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, name = target.split(":")
        command: click.Command = getattr(importlib.import_module(module), name)
        return command


@click.group(cls=_Commands, context_settings=CONTEXT)
@click.version_option(package_name="trackd", prog_name="trackd")
def cli() -> None:
    """trackd: self-hosted, Segment-compatible event tracking."""


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
