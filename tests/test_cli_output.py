"""What the data commands print, on a terminal and through a pipe: tables fitted to the width,
numbers right-aligned, multi-line values kept in their cells, colour only on a terminal, CSV with
LF, the row cap said in every format, one-line refusals of bad options.

"A terminal" is rich's convention, FORCE_COLOR=1 with COLUMNS for its width (what a terminal
emulator gives it); a pipe is what subprocess gives by default. One server for the module.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from tests.conftest import DEFAULT_CONFIG, ROOT, Server, eventually

ANSI = re.compile(r"\x1b\[[0-9;]*m")
TERMINAL = {"FORCE_COLOR": "1", "COLUMNS": "60", "TERM": "xterm-256color"}
LONG = "a fairly long text value that will not fit in sixty columns"
WIDE = (f"SELECT * FROM (VALUES ('{LONG}', 12345, 'line one' || chr(10) || 'line two'), "
        "('short', 7, 'x')) AS t(description, n, note)")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("output") / "data", DEFAULT_CONFIG).start()
    try:
        yield server
    finally:
        server.stop()


def cli(server: Server, *args: str, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("FORCE_COLOR", "COLUMNS", "NO_COLOR", "TTY_COMPATIBLE")}
    return subprocess.run(server.command(*args), capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env={**base, **(env or {})})


def test_a_table_on_a_terminal_fits_its_width_with_numbers_right_and_lines_in_cells(
        live: Server) -> None:
    result = cli(live, "query", WIDE, env=TERMINAL)
    assert result.returncode == 0, result.stderr
    assert ANSI.search(result.stdout)  # colour (a bold header) on a terminal
    lines = ANSI.sub("", result.stdout).splitlines()
    assert max(len(line) for line in lines) <= 60, lines
    # numbers right-aligned: 7 ends where 12345 ends
    big = next(line for line in lines if "12345" in line)
    small = next(line for line in lines if re.search(r" 7 ", line))
    assert small.index(" 7 ") + 2 == big.index("12345") + 5
    # the multi-line value stays in its cell: "line two" under "line one"
    one = next(line for line in lines if "line one" in line)
    two = next(line for line in lines if "line two" in line)
    assert two.index("line two") == one.index("line one") == lines[0].index("note")
    assert lines[-1] == "(2 rows)"


def test_a_table_in_a_pipe_is_plain_and_whole(live: Server) -> None:
    result = cli(live, "query", WIDE)
    assert not ANSI.search(result.stdout)
    lines = result.stdout.splitlines()
    assert LONG in lines[2]
    assert set(lines[1]) == {"-"}
    assert all(line == line.rstrip() for line in lines)


def test_json_is_coloured_on_a_terminal_and_exact_in_a_pipe(live: Server) -> None:
    piped = cli(live, "query", WIDE, "--format", "json")
    assert json.loads(piped.stdout) == [
        {"description": LONG, "n": 12345, "note": "line one\nline two"},
        {"description": "short", "n": 7, "note": "x"}]
    coloured = cli(live, "query", WIDE, "--format", "json", env=TERMINAL)
    assert ANSI.search(coloured.stdout)
    assert json.loads(ANSI.sub("", coloured.stdout))[0]["n"] == 12345


def test_csv_lines_end_in_lf_and_feed_events_show(live: Server) -> None:
    with live.client() as client:
        assert client.post("/v1/track", auth=("wk_web", ""), json={
            "userId": "u1", "event": "Piped", "messageId": "piped-1"}).status_code == 200
    eventually(lambda: "piped-1" in cli(live, "query", "SELECT id FROM web.tracks").stdout)
    raw = subprocess.run(live.command("query", WIDE, "--format", "csv"), capture_output=True,
                         cwd=ROOT, timeout=60).stdout
    assert b"\r" not in raw
    assert raw.endswith(b'12345,"line one\nline two"\nshort,7,x\n')
    # The issue's own example: an id from CSV straight into events show.
    prog = shlex.join([sys.executable, "-m", "trackd"])
    opts = shlex.join(["--config", str(live.config_path), "--data-dir", str(live.data_dir)])
    sql = shlex.quote("SELECT id FROM web.tracks WHERE id = 'piped-1'")
    result = subprocess.run(
        ["bash", "-c", f'{prog} events show "$({prog} query {sql} --format csv {opts} '
                       f'| tail -1)" {opts}'],
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("track 'Piped' of 'u1' from source web, received ")


def test_the_row_cap_is_said_in_every_format(live: Server) -> None:
    sql = "SELECT range AS n FROM range(25)"
    notice = ("Stopped at 10 rows (--limit 10); the query has more. Raise --limit, or use "
              "--all with --format csv or json for every row.")
    table = cli(live, "query", sql, "--limit", "10")
    assert table.stdout.splitlines()[-1] == notice
    csv = cli(live, "query", sql, "--limit", "10", "--format", "csv")
    assert csv.stdout.splitlines() == ["n", *map(str, range(10))]
    assert csv.stderr.strip() == notice
    as_json = cli(live, "query", sql, "--limit", "10", "--format", "json")
    assert [r["n"] for r in json.loads(as_json.stdout)] == list(range(10))
    assert as_json.stderr.strip() == notice
    whole = cli(live, "query", sql, "--limit", "25")
    assert whole.stdout.splitlines()[-1] == "(25 rows)"


def test_the_default_cap_and_all_rows_streamed(live: Server) -> None:
    over = "SELECT range AS n FROM range(10001) ORDER BY n"
    capped = cli(live, "query", over, "--format", "csv")
    assert len(capped.stdout.splitlines()) == 10_001  # header + 10,000
    assert capped.stderr.startswith("Stopped at 10,000 rows (--limit 10000)")
    exact = cli(live, "query", "SELECT range AS n FROM range(10000)", "--format", "csv")
    assert exact.stderr == "" and len(exact.stdout.splitlines()) == 10_001
    every = cli(live, "query", "SELECT range AS n FROM range(12345) ORDER BY n;", "--all",
                "--format", "json")
    assert [r["n"] for r in json.loads(every.stdout)] == list(range(12345))
    assert every.stderr == ""


@pytest.mark.parametrize(("args", "message"), [
    (["query", "SELECT 1", "--limit", "-5"],
     "Error: Invalid value for '--limit': -5 is not in the range 1<=x<=10000. "
     "(see trackd query --help)"),
    (["quarantine", "--limit", "-5"],
     "Error: Invalid value for '--limit': -5 is not in the range 1<=x<=1000. "
     "(see trackd quarantine --help)"),
    (["query", "SELECT 1", "--all"],
     "Error: --all streams rows as CSV or JSON: add --format csv or --format json "
     "(see trackd query --help)"),
    (["query", "SELECT 1", "--format", "xml"],
     "Error: Invalid value for '--format': 'xml' is not one of 'table', 'json', 'csv'. "
     "(see trackd query --help)"),
    (["events", "show", ""],
     "Error: Invalid value for 'MESSAGE_ID': must not be empty (see trackd events show --help)"),
    (["send", "track", "--url", "localhost:8088"],
     "Error: Invalid value for '--url': must be an http(s) URL, e.g. http://127.0.0.1:8088 "
     "(see trackd send --help)"),
])
def test_bad_options_are_refused_in_one_line(live: Server, args: list[str],
                                             message: str) -> None:
    result = cli(live, *args)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", message + "\n")


def test_events_show_starts_with_a_summary_in_every_format(live: Server) -> None:
    with live.client() as client:
        client.post("/v1/identify", auth=("wk_web", ""), json={
            "userId": "u2", "traits": {"plan": "pro"}, "messageId": "shown-1"})
    eventually(lambda: "loaded into" in cli(live, "events", "show", "shown-1").stdout)
    table = cli(live, "events", "show", "shown-1").stdout.splitlines()
    assert re.fullmatch(r"identify of 'u2' from source web, received \S+: loaded into "
                        r"web\.identifies, web\.users\.", table[0]), table[0]
    assert table[1].split() == ["stage", "state", "source", "where", "at", "detail"]
    as_csv = cli(live, "events", "show", "shown-1", "--format", "csv").stdout.splitlines()
    assert as_csv[0] == "stage,state,source,where,at,detail"
    assert any(line.startswith("warehouse,loaded,web,web.users,") for line in as_csv)
    doc = json.loads(cli(live, "events", "show", "shown-1", "--format", "json").stdout)
    assert doc["message"]["traits"] == {"plan": "pro"}
    missing = cli(live, "events", "show", "nope")
    assert (missing.returncode, missing.stderr) == (
        1, "Error: no message with messageId 'nope' was found\n")


def test_quarantine_has_a_header_and_json(live: Server) -> None:
    with live.client() as client:
        client.post("/v1/batch", auth=("wk_web", ""), json={"batch": [
            {"type": "track", "userId": "u", "messageId": "refused-1"}]})
    table = cli(live, "quarantine").stdout.splitlines()
    assert table[0].split() == ["receivedAt", "source", "messageId", "batchIndex", "reason"]
    assert "refused-1" in table[2] and "Missing required field: event" in table[2]
    doc = json.loads(cli(live, "quarantine", "--format", "json").stdout)
    assert doc[0]["messageId"] == "refused-1"
    assert doc[0]["reason"] == "Missing required field: event"


def test_send_warns_about_fields_its_kind_does_not_use_and_quotes_odd_ids(
        live: Server) -> None:
    warned = cli(live, "send", "identify", "--write-key", "wk_web", "--user-id", "u3",
                 "--properties", '{"plan": "pro"}')
    assert warned.returncode == 0
    assert warned.stderr == ("Warning: identify does not use --properties (it takes --traits); "
                             "sent as given.\n")
    for odd in ("tab\there", "cr\rhere", "what?", "hash#tag", "it's"):
        sent = cli(live, "send", "track", "--write-key", "wk_web", "--user-id", "u3",
                   "--event", "Odd", "--message-id", odd)
        assert sent.returncode == 0, sent.stderr
        lookup = sent.stdout.splitlines()[1].removeprefix("Look it up: ")
        # Pasted into a shell, the printed command passes exactly this id.
        words = subprocess.run(["bash", "-c", "printf '%s\\0' " + lookup],
                               capture_output=True, timeout=30).stdout.split(b"\0")
        assert words[words.index(b"show") + 1].decode() == odd, lookup


def test_with_no_server_the_files_answer_with_the_same_cap(live: Server) -> None:
    live.stop()
    result = cli(live, "query", "SELECT range AS n FROM range(30)", "--limit", "20",
                 "--format", "csv")
    assert len(result.stdout.splitlines()) == 21
    assert result.stderr.startswith("Stopped at 20 rows (--limit 20)")


def test_all_rows_keep_going_when_the_server_cuts_pages_short() -> None:
    """A server with a cap on a result's bytes answers fewer rows than asked, truncated: the
    pages go on from where each stopped, so --all still gets every row once."""
    from trackd.cli.query import _every_row

    data = list(range(12_000))
    asked: list[str] = []

    def run(sql: str, limit: int) -> tuple[list[str], list[Sequence[Any]], bool]:
        asked.append(sql)
        found = re.search(r"LIMIT (\d+) OFFSET (\d+)$", sql)
        assert found
        wanted, offset = int(found[1]), int(found[2])
        rows: list[Sequence[Any]] = [[n] for n in data[offset:offset + min(wanted, 1_234)]]
        cut = offset + len(rows) < len(data)
        return ["n"], rows[:limit], cut

    columns, rows = _every_row(run, "SELECT n FROM t ORDER BY n;")
    assert columns == ["n"] and [r[0] for r in rows] == data
    assert asked[0] == ("SELECT * FROM (\nSELECT n FROM t ORDER BY n\n) AS trackd_rows "
                        "LIMIT 5001 OFFSET 0")


def test_a_notice_for_a_cut_that_was_not_the_limit() -> None:
    from trackd.cli.query import cap_notice

    assert cap_notice(812, 10_000) == (
        "Stopped at 812 rows (the server's cap on a result's size); the query has more. "
        "Use --all with --format csv or json for every row.")
