"""A user deleted through the regulations API is gone from every file of the data dir, and
from every warehouse table: the embedded DuckDB file, or PostgreSQL (a database of its own)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pyarrow.parquet as pq

from tests.conftest import Server, eventually
from tests.privacy.common import (
    ADMIN,
    CONFIG,
    RUN,
    archived_users,
    files_holding,
    finished,
    loaded,
    query,
    regulate,
    sdk_traffic,
    warehouse_config,
)
from tests.warehouse.pg import mentions
from trackd.log.reader import LogReader


def test_a_deleted_user_leaves_no_byte_behind_and_the_others_stay(
        warehouse_url: str, make_server: Callable[..., Server]) -> None:
    server = make_server(CONFIG.format(delay=0.5) + warehouse_config(warehouse_url))
    doomed, kept = f"doomed-{RUN}-user", [f"kept-{RUN}-{n}" for n in range(3)]
    sdk_traffic(server, [kept[0], doomed, kept[1], kept[2]])
    # a refused message of theirs sits in the quarantine
    refused = httpx.post(server.url + "/v1/track", auth=("wk_web", ""), timeout=30,
                         json={"userId": doomed, "properties": {"no": "event"}})
    assert refused.status_code == 400
    eventually(lambda: loaded(server, [doomed, *kept]), timeout=60)
    assert files_holding(server.data_dir, doomed.encode())  # the scan sees them before

    done = finished(server, regulate(server, "DELETE_INTERNAL", [doomed]))
    assert [(s["name"], s["status"]) for s in done["stores"]] == [
        ("log", "FINISHED"), ("warehouse", "FINISHED"), ("archive", "FINISHED"),
        ("memory", "FINISHED"), ("ledgers", "FINISHED"), ("files", "FINISHED")]
    assert done["subjectCount"] == 1 and done["finishedAt"]
    rows = {s["name"]: s["rows"] for s in done["stores"]}
    assert rows["log"] >= 6 and rows["warehouse"] >= 6 and rows["archive"] >= 5

    # no byte of the user, nor of the anonymous id their identify linked, in any file
    for needle in (doomed, f"anon-{doomed}", f"old-{doomed}"):
        assert files_holding(server.data_dir, needle.encode()) == [], needle
    for other in kept:  # ... while the others are still there, so the scan is not vacuous
        assert files_holding(server.data_dir, other.encode())
    # each store, as a user would look at it
    for table in ("identifies", "tracks", "pages", "aliases", "order_completed",
                  "viewed_pricing"):
        rows_left = query(server, f"SELECT user_id, anonymous_id FROM web.{table}")
        assert not [r for r in rows_left if doomed in (r["user_id"] or "")
                    or doomed in (r["anonymous_id"] or "")], table
        assert any(r["user_id"] in kept for r in rows_left) or table in (
            "pages", "viewed_pricing")
    assert query(server, f"SELECT count(*) AS n FROM web.users WHERE id = '{doomed}'"
                 ) == [{"n": 0}]
    assert query(server, f"SELECT count(*) AS n FROM web.users WHERE id = '{kept[0]}'"
                 ) == [{"n": 1}]
    if warehouse_url:  # every row of every table of trackd's, every column, on PostgreSQL
        linked = [doomed, f"anon-{doomed}", f"old-{doomed}"]
        assert mentions(warehouse_url, linked, ["web", "_trackd"]) == {}
        left = mentions(warehouse_url, kept, ["web", "_trackd"])
        assert {"web.tracks", "web.identifies", "web.users", "web.aliases", "_trackd.messages",
                "_trackd.events"} <= left.keys()
    assert doomed not in archived_users(server.data_dir)
    assert set(kept) <= archived_users(server.data_dir)
    for path in (server.data_dir / "archive").rglob("*.parquet"):
        assert doomed not in str(pq.read_table(path).to_pylist())
    reader = LogReader(server.data_dir / "log")
    try:
        bodies = b"".join(r.body for r in reader.read("privacy-test", 100_000, {}))
    finally:
        reader.close()
    assert doomed.encode() not in bodies and kept[0].encode() in bodies
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as client:
        quarantined = client.get("/api/v1/quarantine").json()["quarantined"]
    assert quarantined == []
    # the loader and the gateway go on: new messages of others are loaded after the rewrite
    sdk_traffic(server, [f"later-{RUN}"])
    eventually(lambda: loaded(server, [f"later-{RUN}"]), timeout=60)
