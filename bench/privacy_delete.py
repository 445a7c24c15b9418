"""Time to delete one user from a big warehouse: DELETE in every table, then the file rewrite.

Run from the repository root:

    .venv/bin/python bench/privacy_delete.py [--messages 10000000] [--users 200000]

Builds a warehouse the way the loader does (a few real messages through `WarehouseLoader`,
so every table has trackd's shape), then multiplies its rows in SQL to `--messages` track
calls of `--users` users: `web.tracks` and `web.order_completed` (one row each per message),
`_trackd.messages` (the load ledger), plus an identify per user (`web.identifies`,
`web.users`). Then times what a regulation does in the warehouse for one user: the widening
(linked anonymous ids), the DELETE of every row of theirs in one transaction, and the rewrite
of the file (COPY FROM DATABASE to a new file). Prints the times and the file sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from trackd.log import shard
from trackd.log.reader import LogReader
from trackd.log.records import Entry
from trackd.log.writer import LogWriter
from trackd.observability import Registry
from trackd.settings import WarehouseSettings
from trackd.warehouse.db import Database
from trackd.warehouse.erase import erase, linked_anonymous_ids, rewrite
from trackd.warehouse.loader import WarehouseLoader

STAMP = "2024-05-01T10:00:00.000Z"


def _seed_log(log_dir: Path) -> None:
    messages = [
        {"type": "identify", "userId": "user-0", "anonymousId": "anon-0",
         "traits": {"email": "user-0@example.com", "plan": "pro"}},
        {"type": "track", "userId": "user-0", "anonymousId": "anon-0",
         "event": "Order Completed", "properties": {"revenue": 10.5, "currency": "EUR"}},
    ]
    entries = []
    for n, message in enumerate(messages):
        message.update({"messageId": f"seed-{n}", "receivedAt": STAMP, "timestamp": STAMP,
                        "sentAt": STAMP, "context": {"ip": "10.0.0.1"}, "version": 2})
        entries.append(Entry("web", str(message["messageId"]), str(message["type"]), STAMP,
                             json.dumps(message).encode()))

    async def write() -> None:
        writer = LogWriter(shard.shard_path(log_dir, "gw0"), max_pending_bytes=1 << 26)
        writer.start(asyncio.get_running_loop())
        await writer.append(entries)
        writer.close()

    asyncio.run(write())


def _multiply(database: Database, messages: int, users: int) -> None:
    con = database.writer()
    user = f"'user-' || (i % {users})"
    for table in ("web.tracks", "web.order_completed"):
        con.execute(f"INSERT INTO {table} SELECT s.* REPLACE ({user} AS user_id, "
                    f"'anon-' || (i % {users}) AS anonymous_id, 'm-' || i AS id) "
                    f"FROM {table} s, range(1, {messages}) t(i)")
    con.execute(f"INSERT INTO _trackd.messages SELECT s.* REPLACE (i AS key, {user} AS user_id, "
                f"'anon-' || (i % {users}) AS anonymous_id, 'm-' || i AS message_id) "
                f"FROM (SELECT * FROM _trackd.messages LIMIT 1) s, range(1, {messages}) t(i)")
    con.execute(f"INSERT INTO web.identifies SELECT s.* REPLACE ({user} AS user_id, "
                f"'anon-' || (i % {users}) AS anonymous_id, 'i-' || i AS id) "
                f"FROM web.identifies s, range(1, {users}) t(i)")
    con.execute(f"INSERT INTO web.users SELECT s.* REPLACE ('user-' || i AS id) "
                f"FROM web.users s, range(1, {users}) t(i)")
    con.execute("CHECKPOINT")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        (data / "log").mkdir()
        _seed_log(data / "log")
        database = Database(data / "warehouse.duckdb", memory_limit_mb=1024, threads=1)
        reader = LogReader(data / "log")
        loader = WarehouseLoader(WarehouseSettings(), database, reader, Registry())
        loader.open()
        loader.load_available()
        started = time.perf_counter()
        _multiply(database, args.messages, args.users)
        built = time.perf_counter() - started
        size = database.path.stat().st_size
        con = database.writer()
        started = time.perf_counter()
        linked = linked_anonymous_ids(con, {"user-7"}, None)
        widened = time.perf_counter() - started
        started = time.perf_counter()
        con.begin()
        rows = erase(con, {"user-7"}, linked, None)
        con.commit()
        deleted = time.perf_counter() - started
        started = time.perf_counter()
        rewrite(database)
        rewritten = time.perf_counter() - started
        after = database.path.stat().st_size
        database.close()
        reader.close()
    lines = [
        f"warehouse: {args.messages:,} messages of {args.users:,} users, "
        f"{size / 1e6:,.0f} MB (built in {built:.0f} s)",
        f"widen (linked anonymous ids): {widened:.2f} s ({len(linked)} found)",
        f"delete one user's rows ({rows} rows, every table, one transaction): {deleted:.2f} s",
        f"rewrite the file: {rewritten:.1f} s ({after / 1e6:,.0f} MB after)",
        f"total: {widened + deleted + rewritten:.1f} s",
    ]
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
