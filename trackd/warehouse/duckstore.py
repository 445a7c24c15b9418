"""The embedded warehouse behind the seam (`store.Store`): the DuckDB file of `db.Database`.

Every write runs on the database's one write connection, in the loader's thread; a batch, its
bookkeeping and the new log position commit in ONE DuckDB transaction, before `load` returns
(`settle` has nothing to wait for).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, TypeVar

import duckdb

from trackd.log.records import Position
from trackd.observability import get_logger
from trackd.warehouse import ledger, sql
from trackd.warehouse.batch import Batch
from trackd.warehouse.catalog import MAX_COLUMNS, Catalog
from trackd.warehouse.db import Database
from trackd.warehouse.ledger import Loaded
from trackd.warehouse.store import Reader
from trackd.warehouse.violations import ViolationLoader

T = TypeVar("T")
log = get_logger("warehouse")


class DuckStore:
    """`Store` over a `Database` (opened by `open` when it is not yet)."""

    kind = "duckdb"
    overlap = 0  # `load` commits before it returns

    def __init__(self, database: Database, max_columns: int = MAX_COLUMNS) -> None:
        self.database = database
        self.catalog = Catalog(max_columns=max_columns)

    @property
    def is_open(self) -> bool:
        return self.database.is_open

    def open(self) -> None:
        if not self.database.is_open:
            self.database.open()
        con = self.database.writer()
        sql.install(con)
        self.catalog.load(con)

    def close(self) -> None:
        self.database.close()

    def position(self) -> Position:
        return ledger.position(self.database.writer())

    def find(self, keys: Iterable[int]) -> dict[int, Loaded]:
        return ledger.find(self.database.writer(), keys)

    def load(self, batch: Batch, position: Position) -> int:
        return self._in_transaction(position, batch.write)

    def settle(self) -> None:
        """Nothing to wait for: `load` committed."""

    def try_load(self, batch: Batch) -> None:
        con = self.database.writer()
        try:
            con.begin()
            batch.write(con)
        finally:
            self._rollback(con)

    def record_errors(self, rows: list[tuple[Any, ...]], position: Position) -> None:
        self._in_transaction(position, lambda con: ledger.insert(
            con, "load_errors", ledger.LOAD_ERRORS, rows))

    def prune(self, now: datetime) -> None:
        con = self.database.writer()
        con.begin()
        try:
            ledger.prune(con, now)
            con.commit()
        except BaseException:
            self._rollback(con)
            raise

    def load_violations(self, violations: ViolationLoader) -> int:
        return violations.load_once(self.database.writer())

    @contextlib.contextmanager
    def reading(self) -> Iterator[Reader]:
        with self.database.reading() as cursor:
            yield cursor

    def _in_transaction(self, position: Position,
                        write: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        con = self.database.writer()
        con.begin()
        try:
            result = write(con)
            ledger.save_position(con, position)
            con.commit()
        except BaseException:
            self._rollback(con)
            raise
        return result

    def _rollback(self, con: duckdb.DuckDBPyConnection) -> None:
        """Undo a failed transaction, and forget the DDL it ran (the catalog is re-read)."""
        try:
            con.rollback()
            self.catalog.load(con)
        except duckdb.Error:  # the next attempt fails too and says why
            log.exception("could not roll back the warehouse transaction")
