"""A database of its own on the machine's PostgreSQL (127.0.0.1:5432, trust auth) per test."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

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
