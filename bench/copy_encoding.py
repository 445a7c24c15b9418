"""COPY into PostgreSQL as CSV or binary: the loader's encoding and the server's CPU.

    .venv/bin/python bench/copy_encoding.py [--messages 20000] [--repeat 5] [--loads 0]
                                            [--server postgresql://postgres@127.0.0.1:5432]

1. Per table: loads `messages` messages of bench/warehouse_load.py's shape into a new
   PostgreSQL database, keeping the Arrow tables the store COPYed, then for the biggest tables
   (`tracks`, an event table, `_trackd.events`, `_trackd.messages`): the time to encode them as
   CSV (Arrow's writer) and as binary COPY (`binary.encode`), and the CPU of the PostgreSQL
   backend COPYing them into a copy of the table without indexes (from `/proc`, so on this
   machine only), in µs per row: the best of `repeat` runs for the encoding, their mean for
   the server.
2. Whole loads (with `--loads N`): N pairs of loads of 100,000 messages, each in a process of
   its own into a new database, one with every table forced to CSV and one as the store does
   it (binary), in alternating order: the loader's and its backend's CPU per message, medians.

Needs PostgreSQL with trust auth (each database is dropped after).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
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

_LOAD = """
import json, os, sys
from pathlib import Path
from trackd.log.reader import LogReader
from trackd.observability import Registry
from trackd.settings import WarehouseSettings
from trackd.warehouse.loader import WarehouseLoader
from trackd.warehouse.postgres import binary
from trackd.warehouse.postgres.store import PgStore

if sys.argv[3] == "csv":  # every table as CSV, as before binary COPY
    def refuse(*_):
        raise binary.Unsupported("CSV run")
    binary.encode = refuse
store = PgStore(sys.argv[2], threads=1)
loader = WarehouseLoader(WarehouseSettings(), store, LogReader(Path(sys.argv[1])), Registry())
loader.open()
backend = store._writer().info.backend_pid

def cpu():
    fields = Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()
    own = os.times()
    return own.user + own.system, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

before = cpu()
count = loader.load_available()
after = cpu()
print(json.dumps({"count": count, "loader": after[0] - before[0], "server": after[1] - before[1]}))
"""
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


def whole_loads(server: str, pairs: int, messages: int = 100_000) -> None:
    """`pairs` pairs of whole loads, CSV and binary in alternating order: CPU medians."""
    found: dict[str, list[tuple[float, float]]] = {"csv": [], "binary": []}
    with tempfile.TemporaryDirectory(prefix="trackd-bench-") as tmp:
        write_log(Path(tmp), "gw0", [message(i, uuid.uuid4().hex[:8]) for i in range(messages)])
        for pair in range(pairs):
            for kind in ("csv", "binary") if pair % 2 == 0 else ("binary", "csv"):
                name = f"trackd_bench_{uuid.uuid4().hex[:10]}"
                with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
                    admin.execute(f'CREATE DATABASE "{name}"')
                try:
                    out = subprocess.run([sys.executable, "-c", _LOAD, tmp, f"{server}/{name}",
                                          kind], capture_output=True, text=True, check=True,
                                         cwd=ROOT).stdout
                finally:
                    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
                        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                result = json.loads(out.strip().splitlines()[-1])
                if result["count"] != messages:
                    raise SystemExit(f"{kind}: loaded {result['count']} of {messages}")
                found[kind].append((result["loader"] * 1e6 / messages,
                                    result["server"] * 1e6 / messages))
                print(f"  pair {pair + 1} {kind:6} loader {found[kind][-1][0]:.1f}, PostgreSQL "
                      f"{found[kind][-1][1]:.1f} µs CPU a message (load average "
                      f"{os.getloadavg()[0]:.1f})", flush=True)
    print(f"\n{messages:,} messages a load, {pairs} pairs (medians, µs CPU a message)\n")
    print("| COPY | loader | PostgreSQL backend | both |\n|---|---:|---:|---:|")
    for kind, runs in found.items():
        print(f"| {kind} | {statistics.median(r[0] for r in runs):.1f} | "
              f"{statistics.median(r[1] for r in runs):.1f} | "
              f"{statistics.median(r[0] + r[1] for r in runs):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--loads", type=int, default=0)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    per_table(args.server, args.messages, args.repeat)
    if args.loads:
        whole_loads(args.server, args.loads)


def per_table(server: str, messages: int, repeat: int) -> None:
    name = f"trackd_bench_{uuid.uuid4().hex[:10]}"
    url = f"{server}/{name}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory(prefix="trackd-bench-") as tmp:
            tables = captured_tables(url, messages, Path(tmp))
        print(f"{messages:,} messages; µs per row, {repeat} runs "
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

                figures = [best(repeat, csv), best(repeat, encode),
                           server_cost(con, target, table, repeat, "csv"),
                           server_cost(con, target, table, repeat, "binary")]
                print(f"| {target} | {rows:,} | {table.num_columns} | "
                      + " | ".join(f"{f * 1e6 / rows:.2f}" for f in figures) + " |")
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
