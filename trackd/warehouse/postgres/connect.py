"""Connections to the PostgreSQL warehouse, and one clear line when they cannot be made.

Every connection runs in UTC (`timestamptz` values are written and read as UTC), with
`application_name` trackd. The URL's password never appears in an error: errors name the
server as `host:port/database` and the user.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from trackd.errors import ConfigError

CONNECT_TIMEOUT = 10


def where(url: str) -> str:
    """`user@host:port/database` of `url`, without its password."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the configured server"
    host = str(info.get("host") or "localhost")
    return (f"{info.get('user') or 'the default user'}@{host}:{info.get('port') or 5432}/"
            f"{info.get('dbname') or '(default database)'}")


def describe(exc: psycopg.Error, url: str) -> str:
    """One line saying why a connection to `url` failed, and what to check."""
    place = where(url)
    text = str(exc).strip()
    state = getattr(exc, "sqlstate", None)
    if state == "3D000" or "does not exist" in text and "database" in text:
        return (f"the PostgreSQL warehouse database does not exist ({place}): create it "
                "(createdb) or fix [warehouse] url")
    if state in ("28P01", "28000") or "password authentication failed" in text:
        return (f"PostgreSQL refused the login ({place}): wrong password or user; check "
                "[warehouse] url")
    if "no password supplied" in text:
        return f"PostgreSQL asks for a password ({place}): put it in [warehouse] url"
    unreachable = ("Connection refused", "could not connect", "timeout expired",
                   "resolve host", "translate host name", "No route to host", "connection failed")
    if any(phrase in text for phrase in unreachable):
        first = text.splitlines()[0]
        reason = first.rsplit(" failed: ", 1)[-1].strip() if " failed: " in first else first
        return f"cannot reach the PostgreSQL warehouse ({place}): {reason}"
    return f"PostgreSQL warehouse ({place}): {text.splitlines()[0] if text else type(exc).__name__}"


def connect(url: str, *, autocommit: bool = False, **options: Any) -> psycopg.Connection[Any]:
    """A connection to `url` in UTC; raises ConfigError with one line when it cannot."""
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT,
                               application_name="trackd", options="-c TimeZone=UTC",
                               **options)
    except psycopg.Error as exc:
        raise ConfigError(describe(exc, url)) from None


class PgReader:
    """A `Reader` over a psycopg cursor: `?` placeholders become `%s`."""

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Any = None, /) -> PgReader:
        if params is None:  # no placeholders: the text goes as it is
            self._cursor.execute(sql)
        else:
            self._cursor.execute(sql.replace("%", "%%").replace("?", "%s"), params)
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._cursor.fetchall()]

    def fetchone(self) -> tuple[Any, ...] | None:
        row = self._cursor.fetchone()
        return None if row is None else tuple(row)
