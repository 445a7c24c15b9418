"""The PostgreSQL warehouse on the machine's server (127.0.0.1:5432, trust auth): several
loaders at once, schema changes under them, a kill -9 mid-batch, read-only queries, and the
one-line answers to bad configuration. Each test creates and drops its own database."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import eventually
from tests.warehouse import pg
from tests.warehouse.conftest import Log, enriched
from trackd.errors import ConfigError, QueryRefused
from trackd.log.choice import reader_of
from trackd.log.reader import LogReader
from trackd.observability import Registry
from trackd.settings import WarehouseSettings
from trackd.warehouse.loader import WarehouseLoader
from trackd.warehouse.postgres.erase import subject_sources
from trackd.warehouse.postgres.query import PgQueryEngine
from trackd.warehouse.postgres.store import PgStore


@pytest.fixture
def url() -> Iterator[str]:
    with pg.database() as found:
        yield found


def _log_of(loader: WarehouseLoader) -> LogReader:
    """The SQLite log reader a test loader reads."""
    reader = reader_of(loader.source)
    assert reader is not None
    return reader


def loader(url: str, log_dir: Path, **settings: object) -> WarehouseLoader:
    made = WarehouseLoader(WarehouseSettings(**settings),  # type: ignore[arg-type]
                           PgStore(url), LogReader(log_dir), Registry(), retry_delay=0.0)
    made.open()
    return made


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as con:
        return [tuple(r) for r in con.execute(sql).fetchall()]


def test_two_loaders_at_once_load_everything_exactly_once(url: str, tmp_path: Path) -> None:
    """Two pipeline processes' loaders, each with its own share of the work plus a common part
    (as when a message is redelivered to the other process), load every id once."""
    common = [enriched("track", userId="u", event="Both", messageId=f"c{i}",
                       properties={"i": i}) for i in range(300)]
    for name, shard in (("a", "gwa"), ("b", "gwb")):
        own = [enriched("track", userId=f"u{i}", event="Bulk", messageId=f"{name}{i}",
                        properties={"i": i, name: True}) for i in range(2000)]
        people = [enriched("identify", userId=f"p{i}", traits={name: i}) for i in range(50)]
        Log(tmp_path / name).write(own + common + people, shard)
    loaders = [loader(url, tmp_path / name, batch_rows=400) for name in ("a", "b")]
    errors: list[BaseException] = []

    def run(one: WarehouseLoader) -> None:
        try:
            one.load_available()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(one,)) for one in loaders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for one in loaders:
        one.store.close()
        _log_of(one).close()
    assert errors == []
    assert rows(url, "SELECT count(*), count(DISTINCT id) FROM web.bulk") == [(4000, 4000)]
    assert rows(url, "SELECT count(*), count(DISTINCT id) FROM web.both") == [(300, 300)]
    assert rows(url, "SELECT count(*), count(DISTINCT id) FROM web.tracks") == [(4300, 4300)]
    assert rows(url, "SELECT count(*) FROM web.users") == [(50,)]  # both merged into one row
    assert rows(url, "SELECT count(*) FROM web.users WHERE a IS NOT NULL AND b IS NOT NULL") \
        == [(50,)]
    assert rows(url, "SELECT count(*) FROM _trackd.load_errors") == [(0,)]


def test_a_new_property_added_by_another_loader_mid_batch_is_typed_by_the_first(
        url: str, tmp_path: Path) -> None:
    Log(tmp_path / "a").write([enriched("track", userId="u", event="Paid",
                                        properties={"color": "red"})], "gwa")
    Log(tmp_path / "b").write([enriched("track", userId="u", event="Paid",
                                        properties={"color": 7})], "gwb")
    Log(tmp_path / "c").write([enriched("track", userId="u", event="Paid")], "gwc")
    first = loader(url, tmp_path / "c")
    first.load_available()  # the table exists; both loaders know it without `color`
    a, b = loader(url, tmp_path / "a"), loader(url, tmp_path / "b")
    held = psycopg.connect(url, autocommit=True)
    # Loader a waits on the schema lock while "another loader" (here: this connection, then
    # loader b) is mid-change; b's column wins with its type, a loads its row around it.
    held.execute("BEGIN")
    held.execute("SELECT pg_advisory_xact_lock(%s)", [0x7472_6B64_0001])
    done = threading.Event()

    def load_a() -> None:
        a.load_available()
        done.set()

    thread = threading.Thread(target=load_a)
    thread.start()
    eventually(lambda: rows(url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                 "AND NOT granted") == [(1,)])
    held.execute("ALTER TABLE web.paid ADD COLUMN color bigint")
    held.execute("COMMIT")
    held.close()
    thread.join()
    b.load_available()
    assert done.is_set()
    for one in (first, a, b):
        one.store.close()
        _log_of(one).close()
    found = rows(url, "SELECT color, _type_conflicts FROM web.paid ORDER BY color NULLS FIRST")
    assert found == [(None, None), (None, {"color": "red"}), (7, None)]
    assert rows(url, "SELECT data_type FROM information_schema.columns "
                     "WHERE table_name = 'paid' AND column_name = 'color'") == [("bigint",)]


_CHILD = """
import sys
from pathlib import Path
from typing import Any
from trackd.log.reader import LogReader
from trackd.observability import Registry
from trackd.settings import WarehouseSettings
from trackd.warehouse.loader import WarehouseLoader
from trackd.warehouse.postgres.store import PgStore

loader = WarehouseLoader(WarehouseSettings(batch_rows=200), PgStore(sys.argv[2]),
                         LogReader(Path(sys.argv[1])), Registry())
loader.open()
loader.load_available()
"""


def test_kill_9_mid_batch_then_redelivery_loads_each_message_once(url: str,
                                                                  tmp_path: Path) -> None:
    total = 6000
    Log(tmp_path / "log").write([
        enriched("track", userId=f"u{i % 40}", event="Bulk", properties={"i": i})
        for i in range(total)])
    store = PgStore(url)
    store.open()  # trackd's tables, so progress can be read from the start
    store.close()
    progress = [0]

    def loaded() -> int:
        [(total_offset,)] = rows(url, 'SELECT coalesce(sum("offset"), 0) FROM _trackd.offsets')
        return int(str(total_offset))

    for _ in range(2):  # kill -9 twice, each time somewhere in the backlog
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "log"), url])
        try:
            eventually(lambda: loaded() > progress[0], interval=0.005)
            # Not a synchronisation: a random moment of the next batch to die in.
            time.sleep(random.uniform(0, 0.05))
        finally:
            child.kill()
            child.wait()
        progress[0] = loaded()
    assert 0 < progress[0] < total, "the backlog should outlast the child"
    final = loader(url, tmp_path / "log", batch_rows=200)
    final.position = {}  # and a replay of the whole log on top: redelivery of everything
    final.load_available()
    final.store.close()
    _log_of(final).close()
    assert rows(url, "SELECT count(*), count(DISTINCT id), count(DISTINCT i) FROM web.bulk") == [
        (total, total, total)]
    assert rows(url, "SELECT count(*), count(DISTINCT id) FROM web.tracks") == [(total, total)]


@pytest.mark.parametrize("sql", [
    "COMMIT; DELETE FROM web.tracks",
    "SET TRANSACTION READ WRITE; DELETE FROM web.tracks",
    "SELECT 1; DELETE FROM web.tracks",
    "DELETE FROM web.tracks",
    "WITH gone AS (DELETE FROM web.tracks RETURNING id) SELECT * FROM gone",
    "SELECT set_config('transaction_read_only', 'off', true), "
    "(SELECT count(*) FROM web.tracks)",
    "SELECT 1 FROM web.tracks; COMMIT",
    "/* x */ SET default_transaction_read_only = off",
    "SELECT pg_advisory_lock(1), nextval('web.s')",
])
def test_queries_cannot_write_whatever_the_sql(url: str, tmp_path: Path, sql: str) -> None:
    Log(tmp_path / "log").write([enriched("track", userId="u", event="Kept")])
    one = loader(url, tmp_path / "log")
    one.load_available()
    one.store.close()
    _log_of(one).close()
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("CREATE SEQUENCE web.s")
    engine = PgQueryEngine(url)
    with pytest.raises(QueryRefused) as refused:
        engine.query(sql)
    assert "\n" not in str(refused.value)
    assert rows(url, "SELECT count(*) FROM web.tracks") == [(1,)]
    assert rows(url, "SELECT last_value, is_called FROM web.s") == [(1, False)]
    assert engine.query("SELECT count(*) AS n FROM web.tracks").rows == [(1,)]


def test_a_query_past_the_timeout_is_stopped_by_the_server(url: str) -> None:
    engine = PgQueryEngine(url, timeout=0.2)
    with pytest.raises(QueryRefused, match="interrupted|statement timeout"):
        engine.query("SELECT pg_sleep(30)")
    answer = PgQueryEngine(url, max_rows=3).query("SELECT * FROM generate_series(1, 10)")
    assert (answer.rows, answer.truncated) == ([(1,), (2,), (3,)], True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_bad_configuration_answers_with_one_line(url: str) -> None:
    cases = {
        f"postgresql://postgres@127.0.0.1:{free_port()}/x": "cannot reach the PostgreSQL",
        "postgresql://postgres@127.0.0.1:5432/trackd_missing_db": "does not exist",
    }
    for bad, expected in cases.items():
        with pytest.raises(ConfigError) as error:
            PgStore(bad).open()
        assert expected in str(error.value)
        assert "\n" not in str(error.value)
    role = f"trackd_norights_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f"CREATE ROLE {role} LOGIN")
    try:
        with pytest.raises(ConfigError, match="may not create schemas") as error:
            PgStore(url.replace("postgres@", f"{role}@")).open()
        assert "\n" not in str(error.value)
    finally:
        with psycopg.connect(url, autocommit=True) as con:
            con.execute(f"DROP ROLE {role}")


def test_a_wrong_password_answers_with_one_line() -> None:
    with pg.private_server("right-password") as url:
        good = url.replace("postgres@", "postgres:right-password@")
        with psycopg.connect(good):
            pass  # the server takes the right one
        for bad in (url.replace("postgres@", "postgres:wrong-password@"), url):
            with pytest.raises(ConfigError) as error:
                PgStore(bad).open()
            text = str(error.value)
            assert "\n" not in text and "wrong-password" not in text
            assert "PostgreSQL refused the login" in text or "asks for a password" in text


def test_the_loader_reconnects_when_postgresql_drops_its_connection(url: str,
                                                                    tmp_path: Path) -> None:
    log = Log(tmp_path / "log")
    log.write([enriched("track", userId="u", event="Before")])
    one = loader(url, tmp_path / "log")
    one.load_available()
    with psycopg.connect(url, autocommit=True) as con:  # as a server restart would
        con.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    log.write([enriched("track", userId="u", event="After")], "gw1")
    one.load_available()
    one.store.close()
    _log_of(one).close()
    assert rows(url, "SELECT event FROM web.tracks ORDER BY event") == [("after",), ("before",)]
    assert rows(url, "SELECT count(*) FROM _trackd.load_errors") == [(0,)]


def test_a_warehouse_with_full_identifier_indexes_gets_partial_ones(url: str,
                                                                    tmp_path: Path) -> None:
    """Identifier indexes hold no NULLs (no lookup reads them); a warehouse made before has
    full indexes under the old names, replaced when a loader opens it, and a user's messages
    are still found by them."""
    Log(tmp_path / "log").write([enriched("track", userId="ann", event="Signed Up"),
                                 enriched("track", anonymousId="anon-1", event="Viewed")])
    store = PgStore(url)
    store.open()
    store.close()
    with psycopg.connect(url, autocommit=True) as con:
        for name in ("messages_user_id", "messages_anonymous_id", "messages_email",
                     "events_user_id", "events_anonymous_id"):
            table, column = name.split("_", 1)
            con.execute(f"DROP INDEX _trackd.{name}_set")
            con.execute(f"CREATE INDEX {name} ON _trackd.{table} ({column})")
    made = loader(url, tmp_path / "log")
    made.load_available()
    made.store.close()
    _log_of(made).close()
    assert rows(url, "SELECT indexname, indexdef LIKE '%WHERE (% IS NOT NULL)' FROM pg_indexes "
                     "WHERE schemaname = '_trackd' AND tablename IN ('messages', 'events') "
                     "AND indexname <> 'messages_pkey' ORDER BY 1") == [
        ("events_anonymous_id_set", True), ("events_user_id_set", True),
        ("messages_anonymous_id_set", True), ("messages_email_set", True),
        ("messages_user_id_set", True)]
    with psycopg.connect(url) as con:
        assert subject_sources(con, {"ann", "anon-1"}) == {"web"}
        assert subject_sources(con, {"nobody"}) == set()
