"""Messages/s loaded into the warehouse: DuckDB vs PostgreSQL, and 1 vs 2 PostgreSQL loaders.

    .venv/bin/python bench/warehouse_load.py [--messages 100000] [--rounds 3]
                                             [--server postgresql://postgres@127.0.0.1:5432]

Each round writes `messages` analytics-python-shaped messages (90 % tracks over 10 event names
with 12 properties each, 10 % identifies) to SQLite logs, then loads them, each run in a fresh
warehouse and in processes of their own (the loader's thread is the pipeline's only writer):

- `duckdb`: one loader into a new DuckDB file;
- `postgresql-1`: one loader into a new PostgreSQL database;
- `postgresql-2`: two loaders at once into a new PostgreSQL database, each loading half of the
  messages from a log of its own (as two pipeline processes sharing the work).

messages/s = messages / (last loader's end - first loader's start), the opening (connect,
catalog) excluded. The order of the three rotates each round; ratios are taken inside a round,
then their median. Every run's row count is checked. Needs PostgreSQL (trust auth: each run
creates and drops its own database). Not part of the tests; bench/run runs it too.
"""

from __future__ import annotations

import argparse
import asyncio
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trackd.log import shard  # noqa: E402
from trackd.log.records import Entry  # noqa: E402
from trackd.log.writer import LogWriter  # noqa: E402

KINDS = ("duckdb", "postgresql-1", "postgresql-2")
EVENTS = [f"Event {i}" for i in range(10)]
_CHILD = """
import json, os, sys, time
from pathlib import Path
from trackd.log.reader import LogReader
from trackd.observability import Registry
from trackd.settings import WarehouseSettings
from trackd.warehouse.db import Database
from trackd.warehouse.loader import WarehouseLoader
from trackd.warehouse.postgres.store import PgStore

log_dir, target, start_at = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
store = PgStore(target, threads=1) if target.startswith("postgresql") else Database(
    Path(target), threads=1, memory_limit_mb=512)
loader = WarehouseLoader(WarehouseSettings(), store, LogReader(log_dir), Registry())
loader.open()
backend = (store._writer().execute("SELECT pg_backend_pid()").fetchone()[0]
           if isinstance(store, PgStore) else None)

def cpu():
    own = os.times()
    server = 0.0
    if backend is not None:  # the PostgreSQL backend serving this loader, on this machine
        fields = Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()
        server = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own.user + own.system, server

time.sleep(max(0.0, start_at - time.time()))
began, before = time.time(), cpu()
count = loader.load_available()
ended, after = time.time(), cpu()
print(json.dumps({"began": began, "ended": ended, "count": count,
                  "cpu": after[0] - before[0], "server_cpu": after[1] - before[1]}))
"""


def message(i: int, run: str) -> dict[str, Any]:
    stamp = "2024-05-01T12:00:00.000Z"
    base: dict[str, Any] = {
        "messageId": f"{run}-{i}", "receivedAt": stamp, "sentAt": stamp, "timestamp": stamp,
        "originalTimestamp": stamp, "userId": f"user-{i % 5000}",
        "context": {"library": {"name": "analytics-python", "version": "2.3.2"},
                    "ip": "203.0.113.7"}}
    if i % 10 == 9:
        return {**base, "type": "identify",
                "traits": {"email": f"u{i % 5000}@example.com", "plan": "pro", "logins": i}}
    return {**base, "type": "track", "event": EVENTS[i % 10],
            "properties": {f"p{k}": (i * k if k % 3 else f"v{k}-{i % 7}") for k in range(12)}}


def write_log(directory: Path, shard_name: str, messages: list[dict[str, Any]]) -> None:
    import msgspec

    entries = [Entry("app", m["messageId"], m["type"], m["receivedAt"], msgspec.json.encode(m))
               for m in messages]

    async def append() -> None:
        writer = LogWriter(shard.shard_path(directory, shard_name), max_pending_bytes=1 << 30)
        writer.start(asyncio.get_running_loop())
        try:
            for start in range(0, len(entries), 5000):
                await writer.append(entries[start:start + 5000])
        finally:
            writer.close()

    directory.mkdir(parents=True, exist_ok=True)
    asyncio.run(append())


def loaders(jobs: list[tuple[Path, str]]) -> tuple[float, int, float]:
    """Run one loader process per (log, target) at once: wall seconds, messages loaded, and
    CPU seconds of the loaders and of the PostgreSQL backends serving them."""
    start_at = time.time() + 3.0  # after every child opened its warehouse
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(log_dir), target,
                               str(start_at)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
             for log_dir, target in jobs]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise SystemExit(f"a loader failed (exit {proc.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    wall = max(r["ended"] for r in results) - min(r["began"] for r in results)
    cpu = sum(r["cpu"] + r["server_cpu"] for r in results)
    return wall, sum(r["count"] for r in results), cpu


def count_rows(kind: str, target: str) -> int:
    if kind == "duckdb":
        import duckdb

        with duckdb.connect(target, read_only=True) as con:
            row = con.execute("SELECT (SELECT count(*) FROM app.tracks) + "
                              "(SELECT count(*) FROM app.identifies)").fetchone()
    else:
        with psycopg.connect(target) as con:
            row = con.execute("SELECT (SELECT count(*) FROM app.tracks) + "
                              "(SELECT count(*) FROM app.identifies)").fetchone()
    return int(row[0]) if row else 0


def run_one(kind: str, server: str, whole: Path, halves: list[Path], work: Path,
            messages: int) -> tuple[float, float]:
    """messages/s of one kind of run in a fresh warehouse, and CPU ms per 1,000 messages."""
    name = f"trackd_bench_{uuid.uuid4().hex[:10]}"
    target = str(work / f"{name}.duckdb") if kind == "duckdb" else f"{server}/{name}"
    if kind != "duckdb":
        with psycopg.connect(f"{server}/postgres", autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
    try:
        jobs = [(log, target) for log in halves] if kind == "postgresql-2" else [(whole, target)]
        wall, loaded, cpu = loaders(jobs)
        rows = count_rows(kind, target)
        if loaded != messages or rows != messages:
            raise SystemExit(f"{kind}: loaded {loaded}, rows {rows}, expected {messages}")
        return messages / wall, cpu * 1e6 / messages
    finally:
        if kind != "duckdb":
            with psycopg.connect(f"{server}/postgres", autocommit=True) as con:
                con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(messages: int, rounds: int, server: str,
        log_line: Any = print) -> dict[str, Any]:
    """Every round: each kind once (rotated); returns the figures and ratios."""
    figures: dict[str, list[float]] = {kind: [] for kind in KINDS}
    cpu_ms: dict[str, list[float]] = {kind: [] for kind in KINDS}
    ratios: dict[str, list[float]] = {"postgresql-1/duckdb": [],
                                      "postgresql-2/postgresql-1": []}
    for round_no in range(rounds):
        with tempfile.TemporaryDirectory(prefix="trackd-bench-") as tmp:
            work = Path(tmp)
            run_id = uuid.uuid4().hex[:8]
            made = [message(i, run_id) for i in range(messages)]
            write_log(work / "whole", "gw0", made)
            halves = [work / "half0", work / "half1"]
            write_log(halves[0], "gwa", made[0::2])
            write_log(halves[1], "gwb", made[1::2])
            shift = round_no % len(KINDS)
            this: dict[str, float] = {}
            for kind in KINDS[shift:] + KINDS[:shift]:
                this[kind], cost = run_one(kind, server, work / "whole", halves, work, messages)
                figures[kind].append(this[kind])
                cpu_ms[kind].append(cost)
                log_line(f"  round {round_no + 1} {kind:13} {this[kind]:>10,.0f} messages/s, "
                         f"{cost:,.0f} CPU ms per 1,000 (load average "
                         f"{os.getloadavg()[0]:.1f})")
            ratios["postgresql-1/duckdb"].append(this["postgresql-1"] / this["duckdb"])
            ratios["postgresql-2/postgresql-1"].append(this["postgresql-2"] / this["postgresql-1"])
    return {"messages": messages, "rounds": rounds,
            "messages_s": {k: statistics.median(v) for k, v in figures.items()},
            "all_messages_s": figures,
            "cpu_ms_per_1000": {k: statistics.median(v) for k, v in cpu_ms.items()},
            "ratios": {k: statistics.median(v) for k, v in ratios.items()}}


def lines(result: dict[str, Any]) -> list[str]:
    out = [f"{result['messages']:,} messages, {result['rounds']} rounds (medians)", "",
           "| warehouse | messages/s | CPU ms per 1,000 messages (loaders + PostgreSQL) |",
           "|---|---:|---:|"]
    out += [f"| {kind} | {value:,.0f} | {result['cpu_ms_per_1000'][kind]:,.0f} |"
            for kind, value in result["messages_s"].items()]
    out += ["", *(f"{name}: {value:.2f}x" for name, value in result["ratios"].items())]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    result = run(args.messages, args.rounds, args.server)
    print("\n".join(lines(result)))


if __name__ == "__main__":
    main()
