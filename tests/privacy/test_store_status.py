"""A warehouse that cannot be erased is never skipped in silence: its store of the regulation
is FAILED (saying why) and the regulation PARTIAL_SUCCESS, never FINISHED."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.conftest import eventually
from trackd.privacy.regulations import DONE, stores_of
from trackd.privacy.service import PrivacyService
from trackd.privacy.stores import WarehouseSide
from trackd.warehouse.erasure import NoErasure


def run_deletion(tmp_path: Path, made_with: WarehouseSide | None,
                 runs_with: WarehouseSide | None) -> dict[str, Any]:
    """A DELETE_INTERNAL of one user, recorded by a service wired with `made_with` and run
    by one wired with `runs_with` (as after a restart with another configuration)."""
    (tmp_path / "log").mkdir()

    def service(warehouse: WarehouseSide | None) -> PrivacyService:
        return PrivacyService(tmp_path, tmp_path / "run", tmp_path / "log", workers=1,
                              rewrite_delay=0.0, warehouse=warehouse)

    recording = service(made_with)
    regulation_id = recording.regulations.create(
        "DELETE_INTERNAL", "USER_ID", {"user_ids": ["gone-user"]}, ["hash"], None,
        stores_of("DELETE_INTERNAL", **recording.stores))
    recording.regulations.close()

    async def scenario() -> dict[str, Any]:
        running = service(runs_with)
        await running.start()
        try:
            found: dict[str, Any] = await asyncio.to_thread(
                eventually, lambda: (r := running.regulations.get(regulation_id))
                and r["status"] in DONE and r, timeout=30)
            return found
        finally:
            await running.stop()

    return asyncio.run(scenario())


def test_a_warehouse_without_an_erasure_fails_its_store(tmp_path: Path) -> None:
    done = run_deletion(tmp_path, NoErasure("elsewhere"), NoErasure("elsewhere"))
    assert done["status"] == "PARTIAL_SUCCESS"
    stores = {s["name"]: s for s in done["stores"]}
    assert stores["log"]["status"] == "FINISHED"
    assert stores["warehouse"]["status"] == "FAILED"
    assert "the elsewhere warehouse has no privacy erasure" in stores["warehouse"]["error"]


def test_a_warehouse_listed_when_recorded_but_gone_since_fails_its_store(
        tmp_path: Path) -> None:
    done = run_deletion(tmp_path, NoErasure("duckdb"), None)
    assert done["status"] == "PARTIAL_SUCCESS"
    warehouse = [s for s in done["stores"] if s["name"] == "warehouse"]
    assert warehouse[0]["status"] == "FAILED"
    assert "no warehouse is wired" in warehouse[0]["error"]
