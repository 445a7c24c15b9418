"""The `trackd` command: a thin shell over the app. Errors are one line and a non-zero exit."""

from __future__ import annotations

import sys

import click

from trackd.cli.common import CONTEXT
from trackd.cli.data import events, quarantine, query
from trackd.cli.plan import plan
from trackd.cli.replay import replay
from trackd.cli.send import send
from trackd.cli.serve import serve


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="trackd", prog_name="trackd")
def cli() -> None:
    """trackd: self-hosted, Segment-compatible event tracking."""


for command in (serve, send, query, events, quarantine, replay, plan):
    cli.add_command(command)


def main() -> None:
    sys.exit(cli.main(standalone_mode=True))
