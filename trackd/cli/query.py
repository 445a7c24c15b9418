"""`trackd query`: read-only SQL on the warehouse, printed as a table, JSON or CSV.

At most `--limit` rows (10,000 by default, the query API's cap) are printed, and when the
query had more, every format says so (the table under itself, JSON and CSV on stderr).
`--all` streams every row as JSON or CSV: the query is read in pages of PAGE rows
(`SELECT * FROM (<sql>) LIMIT n OFFSET m`), each page its own read, so rows loaded while it
runs may shift the pages; give the query an ORDER BY for a stable order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import click

from trackd.cli.common import config_options, load_settings, one_line_errors
from trackd.cli.output import format_option, note, plural, write_rows
from trackd.cli.remote import admin_request, fail_from
from trackd.server.supervisor import read_server_info
from trackd.settings import Settings

CAP = 10_000  # the query API's row cap; the default --limit
PAGE = 5_000  # rows per page with --all

Rows = list[Sequence[Any]]
Runner = Callable[[str, int], tuple[list[str], Rows, bool]]


def _server_runner(settings: Settings) -> Runner | None:
    """Runs SQL on the server of this data dir, or None when none runs."""
    if read_server_info(settings) is None:
        return None

    def run(sql: str, limit: int) -> tuple[list[str], Rows, bool]:
        response = admin_request(settings, "POST", "/api/v1/query",
                                 json={"sql": sql, "limit": limit + 1})
        if response is None:
            raise click.ClickException("the server stopped while the query ran")
        if response.status_code != 200:
            raise fail_from(response)
        doc = response.json()
        columns: list[str] = doc["columns"]
        rows: Rows = [[r[c] for c in columns] for r in doc["rows"]]
        if len(rows) > limit:
            return columns, rows[:limit], True
        if "truncated" in doc:
            return columns, rows, doc["truncated"] is True
        # A server that does not say whether it cut the answer at its cap: ask for one row
        # past the cap.
        return columns, rows, len(rows) >= CAP and _has_row(run, sql, CAP)

    return run


def _has_row(run: Runner, sql: str, offset: int) -> bool:
    _, rows, _ = run(paged(sql)(1, offset), 1)
    return bool(rows)


def _offline_runner(settings: Settings) -> Runner:
    from trackd.app import offline_query_engine

    engine = offline_query_engine(settings)

    def run(sql: str, limit: int) -> tuple[list[str], Rows, bool]:
        result = engine.query(sql, limit=limit + 1)
        cut = len(result.rows) > limit or result.truncated
        return result.columns, [list(r) for r in result.rows[:limit]], cut

    return run


def runner(settings: Settings) -> Runner:
    """Runs read-only SQL on the server of this data dir, or on the files when none runs:
    `run(sql, limit)` -> (columns, at most `limit` rows, whether the query had more)."""
    return _server_runner(settings) or _offline_runner(settings)


def rows_of(settings: Settings, sql: str) -> tuple[list[str], Rows]:
    """Columns and rows (up to the cap) of read-only SQL on the warehouse."""
    columns, rows, _ = runner(settings)(sql, CAP)
    return columns, rows


def paged(sql: str) -> Callable[[int, int], str]:
    body = sql.strip().rstrip(";").rstrip()
    return lambda limit, offset: (f"SELECT * FROM (\n{body}\n) AS trackd_rows "
                                  f"LIMIT {limit} OFFSET {offset}")


def _every_row(run: Runner, sql: str) -> tuple[list[str], Iterator[Sequence[Any]]]:
    page = paged(sql)
    columns, first, more = run(page(PAGE + 1, 0), PAGE)  # one more row: are there more?

    def rows() -> Iterator[Sequence[Any]]:
        batch, cut, offset = first, more, 0
        while True:
            yield from batch
            offset += len(batch)
            if not cut:
                return
            if not batch:  # a page cut short before its first row: nothing can go further
                raise click.ClickException(f"row {offset + 1} is larger than the server's "
                                           "cap on a result's size")
            _, batch, cut = run(page(PAGE + 1, offset), PAGE)

    return columns, rows()


def cap_notice(count: int, limit: int) -> str:
    why = f"--limit {limit}" if count == limit else "the server's cap on a result's size"
    return (f"Stopped at {plural(count, 'row')} ({why}); the query has more. "
            + ("Raise --limit, or use" if count == limit else "Use")
            + " --all with --format csv or json for every row.")


@click.command()
@click.argument("sql")
@config_options
@format_option
@click.option("--limit", type=click.IntRange(min=1, max=CAP), default=CAP, show_default=True,
              help="Most rows printed; when the query has more, the output says so.")
@click.option("--all", "every", is_flag=True,
              help="Every row, streamed (with --format csv or json).")
@one_line_errors
def query(sql: str, config_path: str | None, data_dir: str | None, fmt: str, limit: int,
          every: bool) -> None:
    """Run read-only SQL on the warehouse and print the rows."""
    if every and fmt == "table":
        raise click.UsageError("--all streams rows as CSV or JSON: add --format csv or "
                               "--format json")
    settings = load_settings(config_path, data_dir)
    run = runner(settings)
    if every:
        columns, stream = _every_row(run, sql)
        write_rows(columns, stream, fmt, str)
        return
    columns, rows, truncated = run(sql, limit)

    def footer(count: int) -> str:
        return cap_notice(count, limit) if truncated else f"({plural(count, 'row')})"

    write_rows(columns, rows, fmt, footer)
    if truncated and fmt != "table":
        note(cap_notice(len(rows), limit))
