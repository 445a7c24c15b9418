"""`trackd privacy`: regulations (delete, suppress, unsuppress) through the running server.

Each command records a regulation with the admin API and prints its id; `--wait` then follows
it until it ends and prints its final status per store (exit 1 unless FINISHED).
"""

from __future__ import annotations

import time
from typing import Any

import click

from trackd.cli.common import config_options, load_settings, one_line_errors
from trackd.cli.remote import admin_request, fail_from
from trackd.errors import ConfigError
from trackd.settings import Settings

DONE = ("FINISHED", "PARTIAL_SUCCESS", "FAILED")


def _call(settings: Settings, method: str, path: str, **kw: Any) -> dict[str, Any]:
    response = admin_request(settings, method, path, **kw)
    if response is None:
        raise ConfigError(f"no trackd server runs on {settings.data_dir}: regulations run "
                          "in the server (start it with trackd serve)")
    if response.status_code != 200:
        raise fail_from(response)
    doc: dict[str, Any] = response.json()["data"]
    return doc


def _line(regulation: dict[str, Any]) -> str:
    stores = ", ".join(f"{s['name']} {s['status']} ({s['rows']})" for s in regulation["stores"])
    return (f"{regulation['id']}  {regulation['regulationType']}  {regulation['subjectType']} "
            f"x{regulation['subjectCount']}  {regulation['status']}  created "
            f"{regulation['createdAt']}" + (f"  [{stores}]" if stores else "")
            + "".join(f"  host {h['host']} {h['status']}" for h in regulation.get("hosts", [])))


def _submit(config_path: str | None, data_dir: str | None, kind: str, user_ids: tuple[str, ...],
            anonymous_ids: tuple[str, ...], sources: tuple[str, ...], wait: bool,
            timeout: float) -> None:
    if not user_ids and not anonymous_ids:
        raise click.UsageError("give at least one --user-id or --anonymous-id")
    settings = load_settings(config_path, data_dir)
    ids = []
    for subject_type, subjects in (("USER_ID", user_ids), ("ANONYMOUS_ID", anonymous_ids)):
        if subjects:
            body: dict[str, Any] = {"regulationType": kind, "subjectType": subject_type,
                                    "subjectIds": list(subjects)}
            if sources:
                body["sources"] = list(sources)
            ids.append(_call(settings, "POST", "/api/v1/regulations", json=body)["regulateId"])
            click.echo(f"Regulation {ids[-1]} ({kind}, {subject_type}) recorded")
    if not wait:
        return
    deadline = time.monotonic() + timeout
    failed = False
    for regulation_id in ids:
        while True:
            regulation = _call(settings, "GET", f"/api/v1/regulations/{regulation_id}")[
                "regulation"]
            if regulation["status"] in DONE:
                break
            if time.monotonic() > deadline:
                raise click.ClickException(f"regulation {regulation_id} still "
                                           f"{regulation['status']} after {timeout:g}s")
            time.sleep(0.5)
        click.echo(_line(regulation))
        failed = failed or regulation["status"] != "FINISHED"
    if failed:
        raise click.ClickException("a regulation did not finish: see its stores above")


def _subject_options(fn: Any) -> Any:
    for option in reversed([
        click.option("--user-id", "user_ids", multiple=True, help="A userId (repeatable)."),
        click.option("--anonymous-id", "anonymous_ids", multiple=True,
                     help="An anonymousId (repeatable)."),
        click.option("--source", "sources", multiple=True,
                     help="Only this source (repeatable; default: every source)."),
        click.option("--wait", is_flag=True, help="Wait until it ends; exit 1 unless FINISHED."),
        click.option("--timeout", type=float, default=600.0, show_default=True,
                     help="Seconds --wait waits."),
    ]):
        fn = option(fn)
    return config_options(fn)


@click.group()
def privacy() -> None:
    """Delete or suppress people's data (GDPR/CCPA regulations), and follow the requests."""


@privacy.command()
@_subject_options
@click.option("--suppress", is_flag=True, help="Also refuse their future messages.")
@click.option("--internal-only", is_flag=True,
              help="Do not send the deletion on to destinations (DELETE_INTERNAL).")
@one_line_errors
def delete(config_path: str | None, data_dir: str | None, user_ids: tuple[str, ...],
           anonymous_ids: tuple[str, ...], sources: tuple[str, ...], wait: bool,
           timeout: float, suppress: bool, internal_only: bool) -> None:
    """Delete every stored copy of these subjects' messages (a USER_ID deletion also covers
    the anonymous ids linked to the user)."""
    kind = ("SUPPRESS_WITH_DELETE" if suppress else "DELETE_ONLY") + (
        "_INTERNAL" if internal_only else "")
    kind = kind.replace("DELETE_ONLY_INTERNAL", "DELETE_INTERNAL")
    _submit(config_path, data_dir, kind, user_ids, anonymous_ids, sources, wait, timeout)


@privacy.command()
@_subject_options
@one_line_errors
def suppress(config_path: str | None, data_dir: str | None, user_ids: tuple[str, ...],
             anonymous_ids: tuple[str, ...], sources: tuple[str, ...], wait: bool,
             timeout: float) -> None:
    """Answer these subjects' future messages with 200 and store them nowhere."""
    _submit(config_path, data_dir, "SUPPRESS_ONLY", user_ids, anonymous_ids, sources, wait,
            timeout)


@privacy.command()
@_subject_options
@one_line_errors
def unsuppress(config_path: str | None, data_dir: str | None, user_ids: tuple[str, ...],
               anonymous_ids: tuple[str, ...], sources: tuple[str, ...], wait: bool,
               timeout: float) -> None:
    """Lift a suppression: these subjects' messages are stored again."""
    _submit(config_path, data_dir, "UNSUPPRESS", user_ids, anonymous_ids, sources, wait,
            timeout)


@privacy.command("status")
@click.argument("regulation_id")
@config_options
@one_line_errors
def status_(regulation_id: str, config_path: str | None, data_dir: str | None) -> None:
    """A regulation's status, per store."""
    settings = load_settings(config_path, data_dir)
    click.echo(_line(_call(settings, "GET", f"/api/v1/regulations/{regulation_id}")[
        "regulation"]))


@privacy.command("list")
@config_options
@one_line_errors
def list_(config_path: str | None, data_dir: str | None) -> None:
    """Every regulation, newest first."""
    settings = load_settings(config_path, data_dir)
    for regulation in _call(settings, "GET", "/api/v1/regulations")["regulations"]:
        click.echo(_line(regulation))
