"""How commands print data: `--format table|json|csv`, fitted to the terminal, plain in a pipe.

On a terminal (or with FORCE_COLOR / TTY_COMPATIBLE=1 set, rich's conventions) tables are
fitted to its width, numbers right-aligned, JSON coloured. Through a pipe the same formats come
out plain: tables at their natural width, no colour, CSV lines ending in LF. Notes about the
output (a row cap that was reached) go to stderr, so stdout stays data in every format.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, TextIO, TypeVar

import click
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("table", "json", "csv")
_PIPE_WIDTH = 1_000_000  # a table in a pipe keeps its natural width: nothing is cut
# SIMPLE_HEAD drawn in ASCII, for pipes: a line of dashes under the header and nothing else.
_ASCII_HEAD = box.Box("    \n    \n -- \n    \n    \n    \n    \n    \n", ascii=True)


def format_option(fn: F) -> F:
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="table",
                        show_default=True, help="Output format.")(fn)


def console(file: TextIO | None = None) -> Console:
    """A console on stdout (or `file`): the terminal's width there, plain and unbounded in a
    pipe."""
    out = Console(file=file or sys.stdout, highlight=False, soft_wrap=False)
    if not out.is_terminal:
        out = Console(file=file or sys.stdout, highlight=False, no_color=True,
                      width=_PIPE_WIDTH, soft_wrap=True)
    return out


def err_console() -> Console:
    return console(sys.stderr)


def note(text: str) -> None:
    """A line about the output (not data): stderr, dim on a terminal."""
    err = err_console()
    err.print(Text(text, style="dim" if err.is_terminal else ""))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _cell_text(value: Any) -> Text:
    if value is None:
        return Text("NULL", style="dim")
    if isinstance(value, dict | list):
        value = json.dumps(value, default=str, ensure_ascii=False)
    text = str(value)
    # Line breaks stay inside the cell; other control characters are shown, never sent raw.
    shown = "".join(ch if ch == "\n" or ch >= " " else repr(ch)[1:-1] for ch in
                    text.replace("\r\n", "\n"))
    return Text(shown)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
          title: str | None = None, plain: bool = False) -> Table:
    numeric = [bool(rows) and all(_is_number(r[i]) or r[i] is None for r in rows)
               and any(r[i] is not None for r in rows) for i in range(len(columns))]
    out = Table(title=title, box=_ASCII_HEAD if plain else box.SIMPLE_HEAD,
                header_style="" if plain else "bold", title_justify="left",
                show_edge=False, pad_edge=False)
    for name, right in zip(columns, numeric, strict=True):
        out.add_column(Text(name), justify="right" if right else "left", overflow="fold")
    for row in rows:
        out.add_row(*(_cell_text(v) for v in row))
    return out


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], footer: str) -> None:
    out = console()
    if out.is_terminal:
        out.print(table(columns, rows))
        out.print(Text(footer, style="dim"))
    else:
        print_plain(table(columns, rows, plain=True), Text(footer))


def print_plain(*renderables: Any) -> None:
    """Renderables as plain text for a pipe: no colour, no padding at the ends of lines."""
    out = console()
    with out.capture() as captured:
        for renderable in renderables:
            out.print(renderable)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def print_json(doc: Any) -> None:
    """One JSON document: coloured on a terminal, plain (and exact) in a pipe."""
    text = json.dumps(doc, indent=2, default=str, ensure_ascii=False)
    out = console()
    if out.is_terminal:
        out.print_json(text)
    else:
        sys.stdout.write(text + "\n")


def write_json_rows(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """A JSON array of row objects, written as the rows come (streams); returns the count."""
    out = sys.stdout
    count = 0
    out.write("[")
    for row in rows:
        out.write(",\n  " if count else "\n  ")
        out.write(json.dumps(dict(zip(columns, row, strict=True)), default=str,
                             ensure_ascii=False))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


def write_csv_rows(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """CSV with a header line, LF line ends, NULL as an empty field; streams."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    count = 0
    for row in rows:
        writer.writerow(["" if v is None else _csv_value(v) for v in row])
        count += 1
    return count


def _csv_value(value: Any) -> Any:
    return json.dumps(value, default=str) if isinstance(value, dict | list) else value


def write_rows(columns: Sequence[str], rows: Iterable[Sequence[Any]], fmt: str,
               footer: Callable[[int], str]) -> int:
    """Rows in `fmt`; the table gets `footer(count)` under it, JSON and CSV get nothing
    extra on stdout. Returns the number of rows written."""
    if fmt == "json":
        if isinstance(rows, list) and console().is_terminal:  # all at hand: coloured
            print_json([dict(zip(columns, row, strict=True)) for row in rows])
            return len(rows)
        return write_json_rows(columns, rows)
    if fmt == "csv":
        return write_csv_rows(columns, rows)
    materialised = list(rows)
    print_table(columns, materialised, footer(len(materialised)))
    return len(materialised)


@contextmanager
def progress(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr while the block runs, when stderr is a terminal; yields
    `advance(n)`. Elsewhere (a log file, CI) it shows nothing: the summary line says it all."""
    err = err_console()
    if not err.is_terminal:
        yield lambda n: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"
