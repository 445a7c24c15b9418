"""Privacy deletion and retention on the PostgreSQL warehouse (the machine's server, a database
of each test's own): every table of trackd's, the identity graph, the regulation's sources, a
team's own schema left alone, and a deletion that meets another process's loader."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from tests.warehouse import pg
from tests.warehouse.conftest import Log, enriched
from tests.warehouse.pg import mentions
from tests.warehouse.test_erase import messages
from tests.warehouse.test_postgres import loader, rows
from trackd.warehouse.loader import WarehouseLoader
from trackd.warehouse.postgres.erase import PgErasure

T = TypeVar("T")


@pytest.fixture
def url() -> Iterator[str]:
    with pg.database("trackd_erase") as found:
        yield found


def running(made: WarehouseLoader, work: Callable[[], Awaitable[T]]) -> T:
    """`work()` while the loader's thread runs (its jobs run there)."""
    made.store.close()

    async def run() -> T:
        await made.start()
        try:
            return await work()
        finally:
            await made.stop()

    return asyncio.run(run())


def loaded(url: str, tmp_path: Path) -> WarehouseLoader:
    Log(tmp_path / "log").write(messages())
    made = loader(url, tmp_path / "log")
    made.load_available()
    with psycopg.connect(url, autocommit=True) as con:  # a team's own table beside trackd's
        con.execute("CREATE SCHEMA team")
        con.execute("CREATE TABLE team.crm (user_id text, note text)")
        con.execute("INSERT INTO team.crm VALUES ('user-a', 'their own record')")
    return made


def test_a_user_and_linked_anonymous_ids_leave_every_postgresql_table(
        url: str, tmp_path: Path) -> None:
    made = loaded(url, tmp_path)
    user_a, user_b = ["user-a", "anon-a", "old-a"], ["user-b", "anon-b"]
    before = mentions(url, user_a, ["web", "_trackd"])
    assert {"web.tracks", "web.identifies", "web.users", "web.aliases", "_trackd.messages",
            "_trackd.events"} <= before.keys()
    others = mentions(url, user_b, ["web", "_trackd"])
    erasure = PgErasure(made, ["web", "backend"])

    async def web_only() -> tuple[set[str], int]:
        linked = await erasure.linked({"user-a"}, None)
        return linked, await erasure.erase({"user-a"}, linked, {"web"})

    linked, deleted = running(made, web_only)
    assert linked == {"anon-a", "old-a"}
    assert deleted == sum(before.values()) - 2  # all but backend's message in _trackd
    assert mentions(url, user_a, ["web", "_trackd"]) == {
        "_trackd.events": 1, "_trackd.messages": 1}  # backend's message: not named
    assert rows(url, "SELECT count(*) FROM backend.tracks WHERE user_id = 'user-a'") == [(1,)]
    assert mentions(url, user_b, ["web", "_trackd"]) == others  # the others stay

    # every source, and a source no longer configured is found by the load ledger
    erasure = PgErasure(made, ["web"])
    assert running(made, lambda: erasure.erase({"user-a"}, linked, None)) >= 3
    assert mentions(url, user_a, ["web", "backend", "_trackd"]) == {}
    assert rows(url, "SELECT note FROM team.crm") == [("their own record",)]
    assert mentions(url, user_b, ["web", "_trackd"]) == others
    assert rows(url, "SELECT count(*) FROM web.users") == [(1,)]


def test_retention_deletes_one_sources_older_rows_on_postgresql(
        url: str, tmp_path: Path) -> None:
    made = loaded(url, tmp_path)
    Log(tmp_path / "log").write([enriched("track", userId="user-n", event="Paid",
                                          received_at="2024-06-01T10:00:00.000Z")])
    made.load_available()
    erasure = PgErasure(made, ["web", "backend"])
    deleted = running(made, lambda: erasure.expire("web", datetime(2024, 5, 2)))
    assert deleted > 0
    assert rows(url, "SELECT user_id FROM web.tracks") == [("user-n",)]
    assert rows(url, "SELECT count(*) FROM web.identifies") == [(0,)]
    assert rows(url, "SELECT count(*) FROM backend.tracks") == [(1,)]
    assert rows(url, "SELECT source, count(*) FROM _trackd.messages GROUP BY 1 ORDER BY 1"
                ) == [("backend", 1), ("web", 1)]  # user-n's track


def test_a_deletion_waits_for_another_loaders_transaction_and_takes_its_rows(
        url: str, tmp_path: Path) -> None:
    """Another process's loader is writing a row of the user (its batch not committed yet):
    the deletion waits for that commit, then deletes that row too."""
    made = loaded(url, tmp_path)
    other = psycopg.connect(url)
    other.execute("INSERT INTO web.tracks (id, user_id, received_at) VALUES "
                  "('late-1', 'user-a', now())")
    erasure = PgErasure(made, ["web"])
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(running(
        made, lambda: erasure.erase({"user-a"}, {"anon-a"}, {"web"}))))
    thread.start()
    thread.join(timeout=2)
    assert thread.is_alive() and not result  # waiting for the other transaction
    other.commit()
    other.close()
    thread.join(timeout=60)
    assert result and result[0] > 0
    assert mentions(url, ["user-a", "anon-a"], ["web"]) == {}
    assert rows(url, "SELECT count(*) FROM web.tracks WHERE user_id = 'user-b'") == [(1,)]


def test_a_table_held_for_long_makes_the_deletion_try_again_later_and_the_loader_go_on(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transaction of the team's own holds a table: each attempt of the deletion gives up
    after `lock_timeout` and deletes nothing, the loader goes on loading between attempts, and
    the first attempt after the table is free deletes the rows. Without a lock timeout the
    deletion (and the loader's thread it runs in) would wait as long as the other session."""
    monkeypatch.setattr("trackd.warehouse.postgres.erase.LOCK_TIMEOUT", 0.2)
    monkeypatch.setattr("trackd.warehouse.postgres.erase.RETRY_PAUSE", 0.2)
    made = loaded(url, tmp_path)
    before = mentions(url, ["user-a", "anon-a"], ["web", "_trackd"])
    holder = psycopg.connect(url)
    holder.execute("LOCK TABLE web.identifies IN ROW EXCLUSIVE MODE")
    erasure = PgErasure(made, ["web"])

    async def until(check: Callable[[], bool]) -> None:
        for _ in range(1200):  # 60 s
            if await asyncio.to_thread(check):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("timed out")

    def deletion_waits_for_the_lock() -> bool:
        return bool(rows(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                              "current_database() AND wait_event_type = 'Lock'")[0][0])

    async def work() -> int:
        try:
            return await deleting()
        finally:  # released even when the test fails: the loader's thread may wait on it
            holder.rollback()
            holder.close()

    async def deleting() -> int:
        deletion = asyncio.create_task(erasure.erase({"user-a"}, {"anon-a"}, {"web"}))
        await until(deletion_waits_for_the_lock)
        # a message written while the deletion waits is loaded: its thread is not held
        await asyncio.to_thread(Log(tmp_path / "log").write, [
            enriched("track", userId="user-c", event="During")])
        await until(lambda: rows(url, "SELECT count(*) FROM web.tracks WHERE user_id = "
                                      "'user-c'") == [(1,)])
        await until(deletion_waits_for_the_lock)  # and it tries again
        assert not deletion.done()
        assert mentions(url, ["user-a", "anon-a"], ["web", "_trackd"]) == before
        holder.rollback()
        return await asyncio.wait_for(deletion, 60)

    assert running(made, work) > 0
    assert mentions(url, ["user-a", "anon-a"], ["web"]) == {}
    assert rows(url, "SELECT count(*) FROM web.tracks WHERE user_id = 'user-c'") == [(1,)]


def test_retention_gives_up_on_a_held_table_instead_of_holding_the_loader(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("trackd.warehouse.postgres.erase.LOCK_TIMEOUT", 0.2)
    made = loaded(url, tmp_path)
    holder = psycopg.connect(url)
    holder.execute("LOCK TABLE web.tracks IN SHARE MODE")  # as a CREATE INDEX does
    erasure = PgErasure(made, ["web"])
    try:
        with pytest.raises(psycopg.errors.LockNotAvailable, match="lock timeout"):
            running(made, lambda: erasure.expire("web", datetime(2024, 5, 2)))
    finally:
        holder.rollback()
    assert rows(url, "SELECT count(*) FROM web.tracks WHERE user_id = 'user-a'") == [(1,)]
    holder.close()
    assert running(made, lambda: erasure.expire("web", datetime(2024, 5, 2))) > 0
