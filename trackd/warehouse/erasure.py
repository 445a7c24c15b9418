"""The warehouse's side of a privacy deletion and of retention, on any store.

The SQL is the same on DuckDB and PostgreSQL; a `Target` (one per store kind: `erase.DuckTarget`,
`postgres.erase.PgTarget`) lists the tables, makes one-column id tables and runs statements
with `?` placeholders, inside one transaction of the loader's write connection.

- `linked_anonymous_ids` reads the identity graph (the load ledger `_trackd.messages`,
  `_trackd.events` and the sources' `aliases` tables) for the anonymous ids (and alias
  previous ids) the users' loaded calls carried;
- `erase_rows` deletes every row of the subjects: any table's rows whose `user_id`,
  `anonymous_id` or `previous_id` is one of their ids, a source's `users` row (`id` = the user
  id), and any row whose `message_id` (or, in a source's tables, `id`) is one of their
  messages' (duplicates, load errors, violations);
- `expire_rows` deletes a source's rows received before a cutoff (retention).

`LoaderErasure` runs them as jobs in the loader's thread (`WarehouseLoader.submit`), between
two batches: a batch the loader read before the log was erased is committed before the
deletion runs, so it cannot bring the subject back. `backend.server_erasure` picks the
erasure of the running store; a store without one gets `NoErasure`, whose deletions fail (the
regulation's warehouse store is then FAILED, never silently FINISHED).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from trackd.warehouse.naming import quote

if TYPE_CHECKING:
    from trackd.warehouse.loader import WarehouseLoader
    from trackd.warehouse.store import Store

T = TypeVar("T")
IDS, USERS, MESSAGES = "__trackd_erase_ids", "__trackd_erase_users", "__trackd_erase_messages"
SUBJECT_COLUMNS = ("user_id", "anonymous_id", "previous_id")
Tables = dict[tuple[str, str], dict[str, str]]  # (schema, table) -> column -> its type
COLUMNS = ("SELECT c.table_schema, c.table_name, c.column_name, c.data_type "
           "FROM information_schema.columns c JOIN information_schema.tables t "
           "USING (table_catalog, table_schema, table_name) "
           "WHERE t.table_type = 'BASE TABLE' AND t.table_catalog = current_database()")


def tables_of(rows: Iterable[tuple[Any, ...]]) -> Tables:
    """`COLUMNS`' rows as `Tables`."""
    out: Tables = {}
    for schema, table, column, kind in rows:
        out.setdefault((schema, table), {})[column] = kind
    return out


class Target(Protocol):
    """One store's connection, in a transaction, as the erasure sees it."""

    def tables(self) -> Tables:
        """The base tables it may delete from: trackd's (`_trackd`) and the sources'."""

    def ids(self, name: str, values: Iterable[str]) -> contextlib.AbstractContextManager[object]:
        """A table `name` with one text column `id` holding `values`, for the block."""

    def rows(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]: ...

    def delete(self, sql: str, params: list[Any]) -> int:
        """Run a DELETE; the rows it deleted."""

    def column(self, name: str, kind: str) -> str:
        """`name` as an expression comparable to text ids."""

    def older(self, kind: str, cutoff: datetime) -> tuple[str, Any]:
        """(`received_at` before `?`, the parameter) for a column of type `kind`."""


def _source_filter(sources: set[str] | None) -> tuple[str, list[Any]]:
    if sources is None:
        return "", []
    return " AND source IN (SELECT unnest(?::VARCHAR[]))", [sorted(sources)]


def _in_scope(schema: str, sources: set[str] | None) -> bool:
    return schema == "_trackd" or sources is None or schema in sources


def linked_anonymous_ids(target: Target, user_ids: set[str], sources: set[str] | None
                         ) -> set[str]:
    """Anonymous ids (and alias previous ids) that the users' loaded calls linked to them."""
    if not user_ids:
        return set()
    found: set[str] = set()
    with target.ids(USERS, user_ids):
        for (schema, table), columns in sorted(target.tables().items()):
            if not _in_scope(schema, sources):
                continue
            if not (table in ("messages", "events") and schema == "_trackd"
                    or table == "aliases" and schema != "_trackd") or "user_id" not in columns:
                continue
            for name in ("anonymous_id", "previous_id"):
                if name not in columns:
                    continue
                filtered, params = _source_filter(sources) if "source" in columns else ("", [])
                user, value = (target.column("user_id", columns["user_id"]),
                               target.column(name, columns[name]))
                found.update(str(r[0]) for r in target.rows(
                    f"SELECT DISTINCT {value} FROM {quote(schema)}.{quote(table)} "
                    f"WHERE {user} IN (SELECT id FROM {USERS}) AND {name} IS NOT NULL"
                    f"{filtered}", params))
    return found - user_ids


def erase_rows(target: Target, user_ids: set[str], anonymous_ids: set[str],
               sources: set[str] | None) -> int:
    """Delete every row of the subjects (inside the target's transaction); rows deleted."""
    ids = user_ids | anonymous_ids
    if not ids:
        return 0
    deleted = 0
    tables = target.tables()
    filtered, params = _source_filter(sources)
    with target.ids(IDS, ids), target.ids(USERS, user_ids):
        message_ids = {str(r[0]) for r in target.rows(
            f"SELECT message_id FROM _trackd.messages WHERE (user_id IN (SELECT id FROM {IDS}) "
            f"OR anonymous_id IN (SELECT id FROM {IDS})){filtered}", params)}
        with target.ids(MESSAGES, message_ids):
            for (schema, table), columns in sorted(tables.items()):
                if not _in_scope(schema, sources):
                    continue
                tests = [f"{target.column(c, columns[c])} IN (SELECT id FROM {IDS})"
                         for c in SUBJECT_COLUMNS if c in columns]
                if "message_id" in columns:
                    tests.append(f"{target.column('message_id', columns['message_id'])} "
                                 f"IN (SELECT id FROM {MESSAGES})")
                if schema != "_trackd" and "id" in columns:
                    tests.append(f"{target.column('id', columns['id'])} IN (SELECT id FROM "
                                 f"{USERS if table == 'users' else MESSAGES})")
                if not tests:
                    continue
                where, bound = " OR ".join(tests), []
                if schema == "_trackd" and sources is not None and "source" in columns:
                    where, bound = f"({where}){filtered}", params
                deleted += target.delete(
                    f"DELETE FROM {quote(schema)}.{quote(table)} WHERE {where}", bound)
    return deleted


def expire_rows(target: Target, source: str, cutoff: datetime) -> int:
    """Delete a source's rows received before `cutoff` (UTC, naive) from its tables and from
    trackd's own (inside the target's transaction); rows deleted. Retention."""
    deleted = 0
    for (schema, table), columns in sorted(target.tables().items()):
        if "received_at" not in columns or schema not in (source, "_trackd"):
            continue
        if schema == "_trackd" and "source" not in columns:
            continue
        where, bound = target.older(columns["received_at"], cutoff)
        params: list[Any] = [bound]
        if schema == "_trackd":
            where += " AND source = ?"
            params.append(source)
        deleted += target.delete(f"DELETE FROM {quote(schema)}.{quote(table)} WHERE {where}",
                                 params)
    return deleted


class LoaderErasure:
    """A store kind's erasure, run as jobs in the loader's thread; `transaction(store)` gives
    a `Target` in one transaction of the loader's write connection (committed on return).

    >>> erasure = backend.server_erasure(settings, store, loader, engine)
    >>> linked = await erasure.linked({"u1"}, None)
    >>> rows = await erasure.erase({"u1"}, linked, None)   # committed on return
    >>> if erasure.rewrites: await erasure.rewrite()      # the bytes are gone on return
    """

    rewrites = False  # whether deleted rows' bytes are gone only after `rewrite`

    def __init__(self, loader: WarehouseLoader) -> None:
        self.loader = loader

    def transaction(self, store: Store) -> contextlib.AbstractContextManager[Target]:
        raise NotImplementedError

    async def _job(self, work: Callable[[Target], T]) -> T:
        def job(store: Store) -> T:
            with self.transaction(store) as target:
                return work(target)

        return await asyncio.wrap_future(self.loader.submit(job))

    async def linked(self, user_ids: set[str], sources: set[str] | None) -> set[str]:
        return await self._job(lambda t: linked_anonymous_ids(t, user_ids, sources))

    async def erase(self, user_ids: set[str], anonymous_ids: set[str],
                    sources: set[str] | None) -> int:
        return await self._job(lambda t: erase_rows(t, user_ids, anonymous_ids, sources))

    async def expire(self, source: str, cutoff: datetime) -> int:
        return await self._job(lambda t: expire_rows(t, source, cutoff))

    async def rewrite(self) -> None:
        return None


class NoErasure:
    """The erasure of a store that has none: deleting fails, saying so (never a silent
    FINISHED); the identity graph is then only what the log holds."""

    rewrites = False

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def _refuse(self) -> RuntimeError:
        return RuntimeError(f"the {self.kind} warehouse has no privacy erasure: its rows of "
                            "the subjects were NOT deleted")

    async def linked(self, user_ids: set[str], sources: set[str] | None) -> set[str]:
        return set()

    async def erase(self, user_ids: set[str], anonymous_ids: set[str],
                    sources: set[str] | None) -> int:
        raise self._refuse()

    async def expire(self, source: str, cutoff: datetime) -> int:
        raise self._refuse()

    async def rewrite(self) -> None:
        return None
