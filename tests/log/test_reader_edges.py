"""LogReader edge cases: a shard file whose tables do not exist yet; forgetting a consumer."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.log.test_log import entry, write
from trackd.log import shard
from trackd.log.reader import LogReader


def test_a_new_shard_without_tables_reads_as_empty(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    sqlite3.connect(shard.shard_path(log_dir, "gw7")).close()  # created, no schema yet
    reader = LogReader(log_dir)
    try:
        assert reader.shards() == ["gw7"]
        assert reader.read("warehouse") == []
        assert reader.heads() == {"gw7": 0}
        assert reader.find("m1") == []
        assert reader.quarantined() == []
    finally:
        reader.close()


def test_unregistered_consumer_no_longer_holds_back_trimming(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    write(log_dir, "gw0", [[entry(f"m{i}")] for i in range(5)])
    reader = LogReader(log_dir)
    try:
        reader.commit("fast", {"gw0": 5})
        reader.register("gone")
        assert reader.trim() == 0  # "gone" has consumed nothing
        reader.unregister("gone")
        assert reader.consumers() == ["fast"]
        assert reader.position("gone") == {}
        assert reader.trim() == 5
    finally:
        reader.close()


_OLD_LAYOUT = """
CREATE TABLE events ("offset" INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT NOT NULL,
    source TEXT NOT NULL, message_id TEXT NOT NULL, type TEXT NOT NULL, body BLOB NOT NULL);
CREATE TABLE quarantine (id INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT NOT NULL,
    source TEXT NOT NULL, message_id TEXT, batch_index INTEGER, reason TEXT NOT NULL,
    body BLOB NOT NULL);
"""


def old_shard(log_dir: Path, name: str, ids: list[str], trim_upto: int = 0) -> None:
    """A shard as written before frames: one row per message in `events`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(shard.shard_path(log_dir, name), isolation_level=None)
    conn.executescript(_OLD_LAYOUT)
    conn.executemany("INSERT INTO events (received_at, source, message_id, type, body) "
                     "VALUES ('2024-05-01T12:00:00.000Z', 'web', ?, 'identify', ?)",
                     [(i, b'{"messageId":"%s"}' % i.encode()) for i in ids])
    conn.execute('DELETE FROM events WHERE "offset" <= ?', (trim_upto,))
    conn.close()


def test_a_shard_in_the_old_layout_keeps_its_offsets_and_records(tmp_path: Path) -> None:
    """Upgrading loses nothing: unread messages keep their offsets (so every stored consumer
    position stays right) and the next message written continues after the last one."""
    log_dir = tmp_path / "log"
    old_shard(log_dir, "gw0", [f"o{i}" for i in range(5)], trim_upto=2)
    reader = LogReader(log_dir)
    try:
        reader.commit("warehouse", {"gw0": 3})
        records = reader.read("warehouse")  # the reader upgrades the shard
        assert [(r.offset, r.message_id, r.type) for r in records] == [(4, "o3", "identify"),
                                                                       (5, "o4", "identify")]
        assert records[0].body == b'{"messageId":"o3"}'
        assert [r.offset for r in reader.find("o4")] == [5]
    finally:
        reader.close()
    write(log_dir, "gw0", [[entry("new")]])
    reader = LogReader(log_dir)
    try:
        assert [(r.offset, r.message_id) for r in reader.read("warehouse")] == [
            (4, "o3"), (5, "o4"), (6, "new")]
    finally:
        reader.close()


def test_a_fully_trimmed_old_shard_continues_its_offsets(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    old_shard(log_dir, "gw1", ["o1", "o2", "o3"], trim_upto=3)  # every row consumed and trimmed
    write(log_dir, "gw1", [[entry("new")]])  # the writer upgrades the shard
    reader = LogReader(log_dir)
    try:
        reader.commit("warehouse", {"gw1": 3})
        assert [(r.offset, r.message_id) for r in reader.read("warehouse")] == [(4, "new")]
    finally:
        reader.close()
