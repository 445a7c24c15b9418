"""Every file trackd writes is private to its user, even under a permissive umask.

A first run of `trackd serve` under umask 022 (the usual default) with the warehouse, a
webhook, the archive and a generated admin token: while it runs (SQLite -wal/-shm files,
DuckDB's .wal and spill files, the admin socket exist then) and after it stopped, the data dir
and every directory in it are 0700 and every file 0600. A data dir left 0755/0644 by an
earlier version is made private at start, with one warning line.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from tests.conftest import Server, eventually
from tests.destinations.receiver import Receiver

MakeServer = Callable[..., Server]


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """Permission bits of the data dir and everything in it, by path relative to it."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(directory, name)
            with contextlib.suppress(FileNotFoundError):  # a spill file just removed
                found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def loose(found: dict[str, int], root: Path) -> dict[str, str]:
    """Entries others can use: a directory other than 0700, a file other than 0600."""
    out: dict[str, str] = {}
    for name, mode in found.items():
        path = root / name
        wanted = 0o700 if path.is_dir() and not path.is_symlink() else 0o600
        if mode != wanted:
            out[name] = oct(mode)
    return out


def test_first_run_under_umask_022_creates_only_private_files(make_server: MakeServer
                                                              ) -> None:
    receiver = Receiver().start()
    config = f"""
[[sources]]
name = "web"
write_keys = ["wk_web"]

[warehouse]
memory_limit_mb = 64

[archive]
flush_interval = 0.2

[[destinations]]
name = "hook"
url = "{receiver.url}/in?token=secret"
poll_interval = 0.05
"""
    try:
        with umask(0o022):
            server = make_server(config)
        root = server.data_dir
        settings = json.loads((root / "credentials.json").read_text())
        key, token = "wk_web", settings["admin_token"]
        with server.client() as client:
            for i in range(20):
                client.post("/v1/identify", auth=(key, ""), json={
                    "userId": f"user-{i}", "traits": {"email": f"user{i}@example.com"}})
            eventually(lambda: len(receiver.accepted()) == 20)
            admin = {"Authorization": f"Bearer {token}"}
            eventually(lambda: client.post("/api/v1/query", headers=admin, json={
                "sql": "SELECT count(*) AS n FROM web.identifies"}).json().get("rows")
                == [{"n": 20}])
            eventually(lambda: list(root.glob("archive/**/*.parquet")))

            # A query bigger than the warehouse's memory spills to disk while it runs.
            seen: dict[str, int] = {}
            done = threading.Event()

            def watch() -> None:
                while not done.is_set():
                    seen.update(modes(root))

            watcher = threading.Thread(target=watch)
            watcher.start()
            try:
                answer = client.post("/api/v1/query", headers=admin, timeout=120, json={
                    "sql": "SELECT count(*) AS n FROM (SELECT range AS i, random() AS r "
                           "FROM range(8000000) ORDER BY r)"})
            finally:
                done.set()
                watcher.join()
            assert answer.status_code == 200, answer.text
            running = {**seen, **modes(root)}
        names = set(running)
        assert any("duckdb_temp" in n for n in names), sorted(names)  # spill files seen
        assert any(n.endswith("-wal") for n in names), sorted(names)  # SQLite WAL files
        assert "warehouse.duckdb" in names
        assert "run/admin.sock" in names and "credentials.json" in names
        assert loose(running, root) == {}
        server.stop()
        assert loose(modes(root), root) == {}
        assert "readable by other users" not in server.output.read_text()
    finally:
        receiver.stop()


def test_a_data_dir_left_readable_is_made_private_at_start(make_server: MakeServer) -> None:
    server = make_server(start=False)
    root = server.data_dir
    with umask(0o022):
        (root / "log").mkdir(parents=True)
        (root / "notes.txt").write_text("left by hand")
    os.chmod(root, 0o755)
    server.start()
    assert loose(modes(root), root) == {}
    output = server.output.read_text()
    assert "the data dir was readable by other users" in output
    assert str(root) in output
    # Nothing to change the next time: no warning.
    server.stop()
    before = output.count("readable by other users")
    server.start()
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/healthz").status_code == 200
    server.stop()
    assert server.output.read_text().count("readable by other users") == before
