"""COPY into PostgreSQL as CSV or binary: the loader's encoding and the server's CPU per row.

    .venv/bin/python bench/copy_encoding.py [--messages 20000] [--repeat 5]
                                            [--server postgresql://postgres@127.0.0.1:5432]

Loads `messages` messages of bench/warehouse_load.py's shape into a new PostgreSQL database,
keeping the Arrow tables the store COPYed, then for the biggest tables (`tracks`, an event
table, `_trackd.events`, `_trackd.messages`): the time to encode them as CSV (Arrow's writer)
and as binary COPY (`binary.encode`), and the CPU of the PostgreSQL backend COPYing them into a
copy of the table without indexes (from `/proc`, so on this machine only), in µs per row: the
best of `repeat` runs for the encoding, their mean for the server. Needs PostgreSQL with trust
auth (the database is dropped after).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from warehouse_load import message, write_log  # noqa: E402

from trackd.log.reader import LogReader  # noqa: E402
from trackd.observability import Registry  # noqa: E402
from trackd.settings import WarehouseSettings  # noqa: E402
from trackd.warehouse.loader import WarehouseLoader  # noqa: E402
from trackd.warehouse.postgres import binary, copying, store  # noqa: E402
from trackd.warehouse.postgres.store import PgStore  # noqa: E402

WANTED = ("app.tracks", "app.event_0", "_trackd.events", "_trackd.messages")


def captured_tables(url: str, messages: int, work: Path) -> dict[str, pa.Table]:
    """The tables the store COPYed while loading `messages` messages, by target."""
    seen: dict[str, list[pa.Table]] = {}
    real = store.copy_arrow

    def keep(con: psycopg.Connection[Any], target: str, table: pa.Table) -> None:
        seen.setdefault(target.replace('"', ""), []).append(table)
        real(con, target, table)

    write_log(work, "gw0", [message(i, uuid.uuid4().hex[:8]) for i in range(messages)])
    pg = PgStore(url, threads=1)
    loader = WarehouseLoader(WarehouseSettings(), pg, LogReader(work), Registry())
    store.copy_arrow = keep  # type: ignore[assignment]
    try:
        loader.open()
        loader.load_available()
    finally:
        store.copy_arrow = real
        pg.close()
    return {target: pa.concat_tables(seen[target], promote_options="permissive")
            for target in WANTED}


def best(repeat: int, run: Any) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return min(times)


def backend_cpu(con: psycopg.Connection[Any]) -> float:
    pid = con.info.backend_pid
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cost(con: psycopg.Connection[Any], target: str, table: pa.Table, repeat: int,
                kind: str) -> float:
    """Backend CPU seconds of COPYing `table` into an index-free copy of `target` (the mean
    of `repeat` COPYs: /proc counts in clock ticks)."""
    copy_of = f"bench_{kind}"
    con.execute(f"DROP TABLE IF EXISTS {copy_of}")
    con.execute(f"CREATE TEMP TABLE {copy_of} (LIKE {target})")
    costs = []
    for _ in range(repeat):
        con.execute(f"TRUNCATE {copy_of}")
        before = backend_cpu(con)
        if kind == "csv":
            copying.copy_csv(con, copy_of, table)
        else:
            copying.copy_arrow(con, copy_of, table)
        costs.append(backend_cpu(con) - before)
    return sum(costs) / len(costs)


def tables_for(url: str, messages: int) -> dict[str, pa.Table]:
    with tempfile.TemporaryDirectory(prefix="trackd-bench-") as tmp:
        return captured_tables(url, messages, Path(tmp))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    name = f"trackd_bench_{uuid.uuid4().hex[:10]}"
    url = f"{args.server}/{name}"
    with psycopg.connect(f"{args.server}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory(prefix="trackd-bench-") as tmp:
            tables = captured_tables(url, args.messages, Path(tmp))
        print(f"{args.messages:,} messages; µs per row, {args.repeat} runs "
              f"(load average {os.getloadavg()[0]:.1f})\n")
        print("| table | rows | columns | encode CSV | encode binary | PostgreSQL CSV "
              "| PostgreSQL binary |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        with psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC") as con:
            for target in WANTED:
                table = tables[target].combine_chunks()
                types = dict(con.execute(copying._TYPES, [target]).fetchall())
                rows = table.num_rows

                def csv(table: pa.Table = table) -> None:
                    pacsv.write_csv(copying._literal_lists(table), io.BytesIO(), copying._CSV)

                def encode(table: pa.Table = table, types: dict[str, str] = types) -> None:
                    binary.encode(table, types)

                figures = [best(args.repeat, csv), best(args.repeat, encode),
                           server_cost(con, target, table, args.repeat, "csv"),
                           server_cost(con, target, table, args.repeat, "binary")]
                print(f"| {target} | {rows:,} | {table.num_columns} | "
                      + " | ".join(f"{f * 1e6 / rows:.2f}" for f in figures) + " |")
    finally:
        with psycopg.connect(f"{args.server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
