"""`trackd plan lint | test | infer | reload`: tracking plans checked offline, made, reloaded.

Exit codes: 0 when everything holds, 1 when a plan is broken, a message breaks its plan, or
the input cannot be read (one line saying where).
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from trackd.cli.common import config_options, load_settings, one_line_errors
from trackd.errors import PlanError
from trackd.messages.validate import problem
from trackd.plans import document
from trackd.plans.plan import Plan, load, problems

_SINCE = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
INFER_LIMIT = 100_000


@click.group()
def plan() -> None:
    """Tracking plans: check them, test messages against them, infer them, reload them."""


@plan.command()
@click.argument("plans", nargs=-1, type=click.Path(dir_okay=False))
@config_options
@one_line_errors
def lint(plans: tuple[str, ...], config_path: str | None, data_dir: str | None) -> None:
    """Check plan files: YAML, JSON Schema validity, unknown keys (errors with line numbers).

    Every error of a file is printed (a file that is not valid YAML has one). Without PLANS,
    checks the plan of every source in the config file.
    """
    if not plans:
        settings = load_settings(config_path, data_dir)
        plans = tuple(s.tracking_plan for s in settings.sources if s.tracking_plan)
        if not plans:
            raise click.ClickException("no source of the config names a tracking_plan")
    failed = False
    for name in plans:
        loaded: Plan | None = None
        try:
            doc = document.read(Path(name), shown_as=name)
            found = problems(doc)
            if not found:
                loaded = Plan(doc)
        except PlanError as exc:
            found = [exc]
        if loaded is None:
            for error in found:
                click.echo(str(error), err=True)
            if len(found) > 1:
                click.echo(f"{name}: {len(found)} errors", err=True)
            failed = True
            continue
        events = len(loaded.events)
        click.echo(f"{name}: ok (plan {loaded.name}, version {loaded.version}, {events} "
                   f"event{'s' if events != 1 else ''})")
    if failed:
        sys.exit(1)


@plan.command("test")
@click.argument("plan_file", metavar="PLAN", type=click.Path(dir_okay=False))
@click.argument("messages", type=click.Path(dir_okay=False, allow_dash=True))
@one_line_errors
def test_messages(plan_file: str, messages: str) -> None:
    """Check MESSAGES (one JSON message per line, or a batch body) against PLAN, offline.

    Prints each violation with the message's place and the field's path; exit 1 if any.
    """
    loaded = load(Path(plan_file), shown_as=plan_file)
    count = failing = found = 0
    for where, message in read_messages(messages):
        count += 1
        lines = _violations(loaded, message)
        for line in lines:
            click.echo(f"{where}: {line}")
        failing += bool(lines)
        found += len(lines)
    against = f"plan {loaded.name} version {loaded.version}"
    if found:
        click.echo(f"{count} messages checked against {against}: {failing} break it "
                   f"({found} violation{'s' if found != 1 else ''})")
        sys.exit(1)
    click.echo(f"{count} messages checked against {against}: all keep it")


def _violations(loaded: Plan, message: Any) -> list[str]:
    if not isinstance(message, dict):
        return ["not a message: must be a JSON object"]
    reason = problem(message, None)
    if reason is not None:
        return [f"not a valid message: {reason}"]
    label = " ".join(str(p) for p in (message["type"], message.get("event")
                                      or message.get("name")) if p)
    judged = loaded.judge(copy.deepcopy(message))
    if judged is None:
        return []
    return [f"({label}) {v.kind} at {v.path}: {v.message} [{v.rule}; {v.action}]"
            for v in judged.violations]


def read_messages(name: str) -> Iterator[tuple[str, Any]]:
    """(where, message) for each message of a file: a Segment batch body, a JSON array, one
    message, or one JSON message per line. `-` reads standard input."""
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{name}: cannot read: {exc}") from None
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    if isinstance(whole, dict) and isinstance(whole.get("batch"), list):
        yield from ((f"{name}: batch[{i}]", m) for i, m in enumerate(whole["batch"]))
        return
    if isinstance(whole, list):
        yield from ((f"{name}: [{i}]", m) for i, m in enumerate(whole))
        return
    if isinstance(whole, dict):
        yield f"{name}", whole
        return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"{name}:{number}", json.loads(line)
        except ValueError as exc:
            raise click.ClickException(f"{name}:{number}: not valid JSON: {exc}") from None


@plan.command()
@click.option("--source", help="Infer from this source's messages in the warehouse.")
@click.option("--since", default="7d", show_default=True,
              help="How far back to look: 30m, 24h, 7d (the warehouse keeps 14 days).")
@click.option("--messages", "messages_file", type=click.Path(dir_okay=False, allow_dash=True),
              help="Infer from a file of messages instead (as for `plan test`).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the plan here (default: standard output).")
@config_options
@one_line_errors
def infer(source: str | None, since: str, messages_file: str | None, output: str | None,
          config_path: str | None, data_dir: str | None) -> None:
    """Write a plan from what arrived: every event and trait with its observed types."""
    from trackd.plans.infer import infer as infer_plan
    from trackd.plans.infer import to_yaml

    if (source is None) == (messages_file is None):
        raise click.UsageError("give --source (the warehouse) or --messages FILE")
    if messages_file is not None:
        found = [m for _, m in read_messages(messages_file)
                 if isinstance(m, dict) and problem(m, None) is None]
        origin = f"{len(found)} messages of {messages_file}"
        name = source or Path(messages_file).stem
    else:
        assert source is not None
        found, origin = _from_warehouse(config_path, data_dir, source, since)
        name = source
    if not found:
        raise click.ClickException(f"no messages to infer a plan from ({origin})")
    text = to_yaml(infer_plan(found, name),
                   f"Inferred by `trackd plan infer` from {origin}.\nReview it, then set "
                   "the controls (flag, omit, block) and raise the version on each change.")
    if output is None:
        click.echo(text, nl=False)
        return
    Path(output).write_text(text, encoding="utf-8")
    click.echo(f"wrote {output} ({origin}; {text.count(chr(10))} lines)", err=True)


def _from_warehouse(config_path: str | None, data_dir: str | None, source: str,
                    since: str) -> tuple[list[dict[str, Any]], str]:
    from trackd.cli.query import rows_of

    settings = load_settings(config_path, data_dir)
    if source not in {s.name for s in settings.sources}:
        raise click.ClickException(f"unknown source {source!r} (sources: "
                                   f"{', '.join(s.name for s in settings.sources)})")
    match = _SINCE.match(since)
    if match is None:
        raise click.BadParameter("use a number and m, h or d, e.g. 7d", param_hint="--since")
    cutoff = datetime.now(UTC).replace(tzinfo=None) - timedelta(
        **{_UNITS[match[2]]: int(match[1])})
    _columns, rows = rows_of(settings, (
        f"SELECT body FROM _trackd.events WHERE source = '{source}' AND received_at >= "
        f"TIMESTAMP '{cutoff.isoformat(sep=' ')}' ORDER BY received_at DESC "
        f"LIMIT {INFER_LIMIT}"))
    found = [json.loads(row[0]) for row in rows]
    return found, f"{len(found)} messages of source {source} since {since} ago"


@plan.command()
@config_options
@one_line_errors
def reload(config_path: str | None, data_dir: str | None) -> None:
    """Make the running server reload its tracking plans (as SIGHUP does)."""
    from trackd.server.supervisor import read_server_info

    settings = load_settings(config_path, data_dir)
    info = read_server_info(settings)
    if info is None:
        raise click.ClickException(f"no trackd server is running on {settings.data_dir}")
    broken = []
    for source in settings.sources:
        if source.tracking_plan:
            try:
                load(Path(source.tracking_plan))
            except PlanError as exc:
                broken.append(str(exc))
    os.kill(info.pid, signal.SIGHUP)
    for error in broken:
        click.echo(f"{error} (the server keeps the previous plan)", err=True)
    if broken:
        sys.exit(1)
    click.echo(f"asked trackd (pid {info.pid}) to reload its tracking plans")
