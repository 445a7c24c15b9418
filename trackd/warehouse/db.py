"""The warehouse file `<data_dir>/warehouse.duckdb`: one writer, many readers, one process.

DuckDB lets one process open a file for writing. In the server that process is the pipeline
process; the loader's thread is the only user of the write connection (`writer()`), and
queries, lookups and the Profile API read on their own cursors (`reading()`), which see the
last committed transaction and never block the writer. Without a server, commands open the file
read-only (`Database(path, read_only=True)`).

Every connection runs with external access disabled and its configuration locked: SQL that
reaches it cannot read or write other files, attach databases, install or load extensions, or
change settings. Migrations (`migrations/NNNN_*.sql`, applied in order, never edited once
shipped) run when the file is opened for writing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import duckdb
import pyarrow as pa

from trackd.errors import ConfigError
from trackd.observability import get_logger

log = get_logger("warehouse")
FILE_NAME = "warehouse.duckdb"
TEMP_DIR = "tmp"  # DuckDB's spill files, beside the file
# DuckDB folds its WAL into the file (a checkpoint) once the WAL passes this size. At its
# default, 16 MB, every 20,000-message batch (~28 MB of WAL) checkpointed on COMMIT, rewriting
# each table's partly filled last row group (122,880 rows) again and again; at 128 MB a row
# group is written about once and a batch costs ~20 % less CPU. The price: up to 128 MB of
# WAL to replay on a start after a crash (~1 s) and the rows not yet checkpointed held in
# memory.
CHECKPOINT_THRESHOLD = "128MB"
_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}


def warehouse_path(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


@contextlib.contextmanager
def registered(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> Iterator[str]:
    """`table` (Arrow) visible to SQL on `con` as `name` for the duration of the block.

    If the block fails, the transaction is aborted and cannot unregister; the rollback drops
    the view anyway, so that error is not allowed to hide the first one.
    """
    con.register(name, table)
    failed = False
    try:
        yield name
    except BaseException:
        failed = True
        raise
    finally:
        try:
            con.unregister(name)
        except duckdb.Error:
            if not failed:
                raise


def _migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("trackd.warehouse") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.name, entry.read_text()))
    return sorted(found)


def migrate(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply the migrations not applied yet, each in its own transaction. Returns their names."""
    con.execute("CREATE SCHEMA IF NOT EXISTS _trackd")
    con.execute("CREATE TABLE IF NOT EXISTS _trackd.migrations "
                "(version INTEGER NOT NULL, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)")
    done = {r[0] for r in con.execute("SELECT version FROM _trackd.migrations").fetchall()}
    applied = []
    for version, name, sql in _migrations():
        if version in done:
            continue
        con.begin()
        try:
            for statement in duckdb.extract_statements(sql):
                con.execute(statement)
            con.execute("INSERT INTO _trackd.migrations VALUES (?, ?, now()::TIMESTAMP)",
                        [version, name])
            con.commit()
        except BaseException:
            con.rollback()
            raise
        applied.append(name)
    return applied


class Database:
    """The warehouse file, opened once per process.

    >>> db = Database(path)
    >>> db.open()                      # creates the file and applies migrations
    >>> con = db.writer()              # loader thread only
    >>> with db.reading() as cur:      # any thread
    ...     cur.execute("SELECT 1").fetchall()
    """

    def __init__(self, path: Path, *, read_only: bool = False, memory_limit_mb: int = 0,
                 threads: int = 0, temp_mb: int = 0) -> None:
        """`memory_limit_mb` and `threads` bound DuckDB in this process (0: DuckDB's default,
        80 % of RAM and one thread per core), so the warehouse leaves room for the gateway.
        `temp_mb` caps the spill files, written in `tmp/` beside the file (private to the
        user; 0: DuckDB's default, 90 % of the free disk)."""
        self.path = path
        self.read_only = read_only
        self._config = dict(_CONFIG)
        self.temp_dir = path.parent / TEMP_DIR
        self._config["temp_directory"] = str(self.temp_dir)
        if temp_mb > 0:
            self._config["max_temp_directory_size"] = f"{temp_mb}MB"
        if memory_limit_mb > 0:
            self._config["memory_limit"] = f"{memory_limit_mb}MB"
        if threads > 0:
            self._config["threads"] = threads
        if not read_only:
            self._config["checkpoint_threshold"] = CHECKPOINT_THRESHOLD
        self._write: duckdb.DuckDBPyConnection | None = None
        self._read_root: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._read_root is not None

    def open(self) -> None:
        """Open (and for writing, create and migrate) the file. Raises ConfigError if it can't."""
        if not self.read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.temp_dir.mkdir(mode=0o700, exist_ok=True)
            self.temp_dir.chmod(0o700)
        elif not self.path.exists():
            raise ConfigError(f"no warehouse at {self.path} yet: it is created when the "
                              "server loads its first events")
        try:
            con = duckdb.connect(str(self.path), read_only=self.read_only, config=self._config)
        except duckdb.IOException as exc:
            raise ConfigError(f"cannot open the warehouse {self.path}: {exc}") from None
        con.execute("SET lock_configuration = true")
        if not self.read_only:
            applied = migrate(con)
            if applied:
                log.info("warehouse migrated", extra={"migrations": applied})
            self._write = con
        with self._lock:
            self._read_root = con.cursor() if not self.read_only else con

    def writer(self) -> duckdb.DuckDBPyConnection:
        """The write connection: use it from one thread only (the loader's)."""
        if self._write is None:
            raise ConfigError("the warehouse is not open for writing")
        return self._write

    @contextlib.contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of its own for one read, safe alongside the writer and other readers."""
        with self._lock:
            if self._read_root is None:
                raise ConfigError("the warehouse is not open")
            cursor = self._read_root.cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    def close(self) -> None:
        """Close every connection; a checkpoint folds the WAL into the file."""
        with self._lock:
            root, self._read_root = self._read_root, None
        if self._write is not None:
            with contextlib.suppress(duckdb.Error):
                self._write.execute("CHECKPOINT")
            self._write.close()
            self._write = None
        elif root is not None:
            root.close()
