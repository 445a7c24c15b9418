"""A database of its own on the machine's PostgreSQL (127.0.0.1:5432, trust auth) per test."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

SERVER = "postgresql://postgres@127.0.0.1:5432"


def server_up() -> bool:
    try:
        with psycopg.connect(f"{SERVER}/postgres", connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@contextlib.contextmanager
def database(prefix: str = "trackd_test") -> Iterator[str]:
    """Create a uniquely named database, yield its URL, drop it (closing its connections)."""
    if not server_up():
        pytest.fail("PostgreSQL is not answering on 127.0.0.1:5432 (the tests need it)")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{SERVER}/{name}"
    finally:
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def mentions(url: str, needles: list[str], schemas: list[str]) -> dict[str, int]:
    """Rows of every base table of `schemas` whose text (every column) holds a needle."""
    found: dict[str, int] = {}
    with psycopg.connect(url) as con:
        tables = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE "
            "table_type = 'BASE TABLE' AND table_schema = ANY(%s) ORDER BY 1, 2",
            [schemas]).fetchall()
        for schema, table in tables:
            count = con.execute(f'SELECT count(*) FROM "{schema}"."{table}" AS r '
                                "WHERE r::text LIKE ANY(%s)",
                                [[f"%{n}%" for n in needles]]).fetchone()
            if count and count[0]:
                found[f"{schema}.{table}"] = count[0]
    return found


@contextlib.contextmanager
def private_server(password: str) -> Iterator[str]:
    """A PostgreSQL server of the test's own on a free loopback port that asks for passwords
    (scram-sha-256), run as the `postgres` system user; yields its URL without the password."""
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not binaries or shutil.which("runuser") is None:
        pytest.fail("a private PostgreSQL server needs Debian's postgresql (initdb) and runuser")
    bin_dir = binaries[-1].parent
    home = Path(tempfile.mkdtemp(prefix="trackd-pg-"))
    home.chmod(0o755)
    data, secret = home / "data", home / "pw"
    secret.write_text(password)
    shutil.chown(home, "postgres")
    shutil.chown(secret, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def as_postgres(*args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True,
                       capture_output=True, timeout=120)

    as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                "--auth-host=scram-sha-256", "--auth-local=trust", f"--pwfile={secret}")
    as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(home / "log"),
                "-o", f"-p {port} -k {home} -c listen_addresses=127.0.0.1", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(home, ignore_errors=True)
