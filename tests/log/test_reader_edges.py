"""LogReader edge cases: a shard file whose tables do not exist yet; forgetting a consumer."""

from __future__ import annotations

import sqlite3
from pathlib import Path

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
    log_dir.mkdir()
    conn = shard.connect(shard.shard_path(log_dir, "gw0"), write=True)
    conn.executemany("INSERT INTO events (received_at, source, message_id, type, body) "
                     "VALUES ('t', 'web', ?, 'track', x'7b7d')", [(f"m{i}",) for i in range(5)])
    conn.close()
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
