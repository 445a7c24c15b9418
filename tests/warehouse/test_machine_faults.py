"""A fault of the machine (a full disk) is never blamed on a message: the loader keeps the
records and retries them once there is room, where a message that cannot load is written off.

A canary loaded and rolled back writes nothing, so it loads on a full disk: these errors are
told apart by what they say (and on PostgreSQL by their SQLSTATE class)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import tmpfs
from tests.warehouse.conftest import Log, enriched
from trackd.log.reader import LogReader
from trackd.observability import Registry
from trackd.settings import WarehouseSettings
from trackd.warehouse.db import Database
from trackd.warehouse.loader import WarehouseFailing, WarehouseLoader, machine_fault


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "16m") as mount:
        yield mount


def fill(directory: Path) -> Path:
    """Write a file until the disk is full; returns it (remove it to give the room back)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 512):  # then the last pages a smaller write still fits in
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


@pytest.mark.needs_root
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_keeps_the_records_and_loads_them_once_there_is_room(
        tmp_path: Path, log: Log, small_disk: Path) -> None:
    reader = LogReader(tmp_path / "log")
    database = Database(small_disk / "warehouse.duckdb")
    metrics = Registry()
    loader = WarehouseLoader(WarehouseSettings(), database, reader, metrics, retry_delay=0.0)
    loader.open()
    try:
        padding = "p" * 4000

        def padded(first: int) -> None:
            log.write([enriched("track", messageId=f"full-{n}", userId="u", event="Padded",
                                properties={"pad": padding}) for n in range(first, first + 200)])
        padded(0)
        assert loader.load_available() == 200  # the tables exist: a canary writes nothing
        padded(200)
        filler = fill(small_disk)
        with pytest.raises(WarehouseFailing, match="No space left on device"):
            loader.load_available()
        # Nothing written off, nothing more loaded, the position where it was.
        with database.reading() as cur:
            assert cur.execute("SELECT count(*) FROM _trackd.load_errors").fetchall() == [(0,)]
            assert cur.execute('SELECT "offset" FROM _trackd.offsets').fetchall() == [(200,)]
            assert cur.execute("SELECT count(*) FROM web.padded").fetchall() == [(200,)]
        assert reader.position("warehouse") == {"gw0": 200}
        filler.unlink()
        assert loader.load_available() == 200
        with database.reading() as cur:
            assert cur.execute("SELECT count(*) FROM _trackd.load_errors").fetchall() == [(0,)]
            assert cur.execute("SELECT count(DISTINCT id) FROM web.padded").fetchall() == [
                (400,)]
    finally:
        database.close()
        reader.close()


@pytest.mark.parametrize("error", [
    OSError(28, "No space left on device"),
    RuntimeError('Failed to commit: Could not write file "w.wal": Disk quota exceeded'),
    psycopg.errors.DiskFull("could not extend file"),
    psycopg.errors.IoError("could not read block"),
], ids=["enospc", "quota", "postgresql-disk-full", "postgresql-io-error"])
def test_errors_of_the_machine_are_told_apart(error: Exception) -> None:
    assert machine_fault(error)
    try:
        raise ValueError("the commit failed") from error
    except ValueError as wrapped:
        assert machine_fault(wrapped)  # also behind another exception


@pytest.mark.parametrize("error", [
    ValueError("JSON is malformed: invalid character"),
    psycopg.errors.NumericValueOutOfRange("value out of range"),
    RuntimeError("Conversion Error: Could not convert string 'x' to INT64"),
], ids=["bad-json", "postgresql-out-of-range", "duckdb-conversion"])
def test_errors_of_a_message_are_not_the_machine(error: Exception) -> None:
    assert not machine_fault(error)
