"""Time to delete one user from a big PostgreSQL warehouse (the regulation's warehouse store).

Run from the repository root, with a database of its own that it fills (and leaves):

    createdb trackd_bench_delete
    .venv/bin/python bench/privacy_delete_pg.py \
        --url postgresql://postgres@127.0.0.1/trackd_bench_delete \
        [--messages 1000000] [--users 20000]

Builds the warehouse the way `privacy_delete.py` does for DuckDB (a few real messages through
`WarehouseLoader` on `PgStore`, so every table has trackd's shape, then multiplied in SQL to
`--messages` track calls of `--users` users in `web.tracks`, `web.order_completed` and
`_trackd.messages`, plus an identify and a `users` row per user), then times what a regulation
does in the warehouse for one user through `PgErasure` (the loader's thread): the widening
(linked anonymous ids) and the DELETE of every row of theirs in one transaction. There is no
rewrite on PostgreSQL. Prints the times and the database size.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from privacy_delete import _seed_log  # noqa: E402

from trackd.log.reader import LogReader  # noqa: E402
from trackd.observability import Registry  # noqa: E402
from trackd.settings import WarehouseSettings  # noqa: E402
from trackd.warehouse.loader import WarehouseLoader  # noqa: E402
from trackd.warehouse.postgres.erase import PgErasure  # noqa: E402
from trackd.warehouse.postgres.store import PgStore  # noqa: E402


def _multiply(url: str, messages: int, users: int) -> None:
    user, anon = f"'user-' || (i % {users})", f"'anon-' || (i % {users})"
    with psycopg.connect(url, autocommit=True) as con:
        def copy(table: str, count: int, replace: dict[str, str], limit: str = "") -> None:
            schema, name = table.split(".")
            columns = [r[0] for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = %s ORDER BY ordinal_position", [schema, name]).fetchall()]
            listed = ", ".join(f'"{c}"' for c in columns)
            values = ", ".join(replace.get(c, f's."{c}"') for c in columns)
            con.execute(f"INSERT INTO {table} ({listed}) SELECT {values} FROM "
                        f"(SELECT * FROM {table}{limit}) s, generate_series(1, {count}) i")

        for table in ("web.tracks", "web.order_completed"):
            copy(table, messages - 1, {"user_id": user, "anonymous_id": anon,
                                       "id": "'m-' || i"})
        copy("_trackd.messages", messages - 1, {"key": "i + 1000", "user_id": user,
                                               "anonymous_id": anon,
                                               "message_id": "'m-' || i"}, " LIMIT 1")
        copy("web.identifies", users - 1, {"user_id": user, "anonymous_id": anon,
                                           "id": "'i-' || i"})
        copy("web.users", users - 1, {"id": "'user-' || i"})
        con.execute("VACUUM ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        (data / "log").mkdir()
        _seed_log(data / "log")
        reader = LogReader(data / "log")
        loader = WarehouseLoader(WarehouseSettings(), PgStore(args.url), reader, Registry())
        loader.open()
        loader.load_available()
        loader.store.close()
        started = time.perf_counter()
        _multiply(args.url, args.messages, args.users)
        built = time.perf_counter() - started
        with psycopg.connect(args.url) as con:
            size = con.execute("SELECT pg_database_size(current_database())").fetchone()
        erasure = PgErasure(loader, ["web"])

        async def regulation() -> tuple[set[str], float, int, float]:
            await loader.start()
            try:
                started = time.perf_counter()
                linked = await erasure.linked({"user-7"}, None)
                widened = time.perf_counter() - started
                started = time.perf_counter()
                rows = await erasure.erase({"user-7"}, linked, None)
                return linked, widened, rows, time.perf_counter() - started
            finally:
                await loader.stop()

        linked, widened, rows, deleted = asyncio.run(regulation())
        reader.close()
    lines = [
        f"warehouse: {args.messages:,} messages of {args.users:,} users, PostgreSQL database "
        f"{(size[0] if size else 0) / 1e6:,.0f} MB (built in {built:.0f} s)",
        f"widen (linked anonymous ids): {widened:.2f} s ({len(linked)} found)",
        f"delete one user's rows ({rows} rows, every table, one transaction): {deleted:.2f} s",
        f"total: {widened + deleted:.1f} s",
    ]
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
