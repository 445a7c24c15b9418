"""A kill -9 in the middle of a deletion: the next start resumes it and finishes it."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from tests.conftest import Server, eventually
from tests.privacy.common import (
    CONFIG,
    RUN,
    files_holding,
    finished,
    loaded,
    regulate,
    regulation,
    sdk_traffic,
    warehouse_config,
)
from tests.warehouse import pg


def test_a_deletion_killed_midway_finishes_after_the_restart(
        make_server: Callable[..., Server]) -> None:
    server = make_server(CONFIG.format(delay=30))  # the rewrite waits: time to kill it
    doomed, kept = f"killed-{RUN}-user", f"survivor-{RUN}-user"
    sdk_traffic(server, [doomed, kept])
    eventually(lambda: loaded(server, [doomed, kept]), timeout=60)
    regulation_id = regulate(server, "DELETE_INTERNAL", [doomed])

    def waiting_for_the_rewrite() -> bool:
        stores = {s["name"]: s["status"] for s in regulation(server, regulation_id)["stores"]}
        return bool(stores["log"] == "FINISHED" and stores["warehouse"] == "RUNNING")

    eventually(waiting_for_the_rewrite, timeout=60)
    server.kill()
    assert regulation_id  # killed while RUNNING: the warehouse file still held the rows
    server.config_path.write_text(CONFIG.format(delay=0.2))
    server.start()
    done = finished(server, regulation_id)
    assert {s["status"] for s in done["stores"]} == {"FINISHED"}
    for needle in (doomed, f"anon-{doomed}"):
        assert files_holding(server.data_dir, needle.encode()) == [], needle
    assert files_holding(server.data_dir, kept.encode())


def test_a_postgresql_deletion_killed_midway_finishes_after_the_restart(
        make_server: Callable[..., Server]) -> None:
    """On PostgreSQL the deletion is one transaction: it is held midway by another session's
    lock on a table (so the kill lands while it waits), then killed; after the restart it
    runs again and finishes, and no table holds the subject."""
    with pg.database("trackd_resume") as url:
        server = make_server(CONFIG.format(delay=0.2) + warehouse_config(url))
        doomed, kept = f"killed-{RUN}-pg", f"survivor-{RUN}-pg"
        sdk_traffic(server, [doomed, kept])
        eventually(lambda: loaded(server, [doomed, kept]), timeout=60)
        with psycopg.connect(url) as holder:
            holder.execute("LOCK TABLE web.identifies IN ROW EXCLUSIVE MODE")
            regulation_id = regulate(server, "DELETE_INTERNAL", [doomed])

            def waiting_for_the_lock() -> bool:
                stores = {s["name"]: s["status"]
                          for s in regulation(server, regulation_id)["stores"]}
                waiting = holder.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                    "current_database() AND wait_event_type = 'Lock'").fetchone()
                return bool(stores["log"] == "FINISHED" and stores["warehouse"] == "RUNNING"
                            and waiting and waiting[0])

            eventually(waiting_for_the_lock, timeout=60)
            server.kill()
            assert pg.mentions(url, [doomed], ["web"])  # killed before its commit
            holder.rollback()
        server.start()
        done = finished(server, regulation_id)
        assert {s["status"] for s in done["stores"]} == {"FINISHED"}
        needles = [doomed, f"anon-{doomed}"]
        assert pg.mentions(url, needles, ["web", "_trackd"]) == {}
        assert pg.mentions(url, [kept], ["web"])
        for needle in needles:
            assert files_holding(server.data_dir, needle.encode()) == [], needle
        assert files_holding(server.data_dir, kept.encode())
        server.stop()
