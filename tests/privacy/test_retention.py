"""Per-source retention: old warehouse rows, archive partitions and quarantine go; other
sources' stay."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx

from tests.conftest import Server, eventually
from tests.privacy.common import ADMIN, RUN, query, warehouse_config
from trackd.log.reader import LogReader
from trackd.observability import Registry
from trackd.privacy.retention import apply_retention
from trackd.settings import load
from trackd.warehouse.backend import server_backend, server_erasure
from trackd.warehouse.loader import WarehouseLoader

CONFIG = """
[server]
admin_token = "test-admin-token"

[archive]
flush_interval = 0.5

[[sources]]
name = "web"
write_keys = ["wk_web"]
retention_days = 5

[[sources]]
name = "backend"
write_keys = ["wk_backend"]
"""


def test_retention_removes_what_is_older_for_that_source_only(
        warehouse_url: str, make_server: Callable[..., Server]) -> None:
    server = make_server(CONFIG + warehouse_config(warehouse_url))
    for key in ("wk_web", "wk_backend"):
        with httpx.Client(base_url=server.url, auth=(key, ""), timeout=30) as client:
            assert client.post("/v1/track", json={"userId": f"r-{RUN}", "event": "Old"}
                               ).status_code == 200
            assert client.post("/v1/track", json={"userId": f"r-{RUN}"}).status_code == 400

    def both_loaded() -> bool:
        try:
            rows = query(server, "SELECT (SELECT count(*) FROM web.tracks) AS w, "
                                 "(SELECT count(*) FROM backend.tracks) AS b")
        except AssertionError:
            return False
        return rows == [{"w": 1, "b": 1}] and len(list(
            (server.data_dir / "archive").rglob("*.parquet"))) == 2

    eventually(both_loaded, timeout=60)
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as client:
        assert len(client.get("/api/v1/quarantine").json()["quarantined"]) == 2
    server.stop()

    data = server.data_dir
    settings = load(server.config_path, data_dir=str(data))
    reader = LogReader(data / "log")
    store, engine = server_backend(settings)  # the warehouse the server ran, and its erasure
    loader = WarehouseLoader(settings.warehouse, store, reader, Registry())

    async def run() -> dict[str, int]:
        await loader.start()
        try:
            return await apply_retention(
                {"web": 5.0, "backend": 0.0}, log_dir=data / "log", archive=data / "archive",
                warehouse=server_erasure(settings, store, loader, engine),
                now=datetime.now(UTC) + timedelta(days=6))
        finally:
            await loader.stop()

    removed = asyncio.run(run())
    reader.close()
    assert removed["archive"] == 1 and removed["quarantine"] == 1
    assert removed["warehouse"] >= 2  # web.tracks, web.old, _trackd's rows of them
    assert [p.parent.parent.name for p in (data / "archive").rglob("*.parquet")] == [
        "source=backend"]
    server.start()
    assert query(server, "SELECT (SELECT count(*) FROM web.tracks) AS w, "
                         "(SELECT count(*) FROM backend.tracks) AS b") == [{"w": 0, "b": 1}]
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as client:
        left = client.get("/api/v1/quarantine").json()["quarantined"]
    assert [q["source"] for q in left] == ["backend"]
