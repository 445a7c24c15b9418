"""After hostile schemas from one source, how soon a message of another source is queryable.

    .venv/bin/python bench/hostile_canary.py [--runs 5] [--tables 1000]

Each run starts a fresh `trackd serve` (one gateway worker), sends source `web` 4 batches of
10 tracks with 255 new properties each and one batch of 2,500 new event names (what
`tests/warehouse/test_hostile.py` sends), then one canary track on source `backend`, and times
from the canary's 200 to its row in `_trackd.messages` (polled every 20 ms through the admin
query API: an upper bound by up to 20 ms + a query). Also reports how long web's records took
to be all loaded after the canary's 200. Prints each run and the medians. See
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import DEFAULT_CONFIG, Server  # noqa: E402

ADMIN = {"Authorization": "Bearer test-admin-token"}


def _batch(url: str, key: str, messages: list[dict[str, Any]]) -> None:
    response = httpx.post(f"{url}/v1/batch", auth=(key, ""), json={"batch": messages},
                          timeout=60)
    response.raise_for_status()


def _rows(url: str, sql: str) -> list[dict[str, Any]]:
    response = httpx.post(f"{url}/api/v1/query", json={"sql": sql}, headers=ADMIN, timeout=60)
    if response.status_code != 200:
        return []
    rows: list[dict[str, Any]] = response.json()["rows"]
    return rows


def run_once(directory: Path, tables: int) -> tuple[float, float]:
    """(canary 200 -> queryable, canary 200 -> every web record loaded), in seconds."""
    server = Server(directory / "data", DEFAULT_CONFIG + (
        f"\n[warehouse]\nmax_tables_per_source = {tables}\n")).start()
    try:
        for request in range(4):
            _batch(server.url, "wk_web", [
                {"type": "track", "event": "Boom", "userId": "attacker",
                 "properties": {f"p{request}_{i}_{j}": j for j in range(255)}}
                for i in range(10)])
        _batch(server.url, "wk_web", [{"type": "track", "event": f"e{i}", "userId": "attacker"}
                                      for i in range(2500)])
        canary = f"canary-{uuid.uuid4()}"
        _batch(server.url, "wk_backend", [{"type": "track", "event": "Canary", "userId": "u",
                                           "messageId": canary}])
        acknowledged = time.monotonic()
        while not _rows(server.url, "SELECT 1 FROM _trackd.messages "
                                    f"WHERE message_id = '{canary}'"):
            time.sleep(0.02)
        queryable = time.monotonic() - acknowledged
        done = "SELECT 1 FROM _trackd.messages WHERE source = 'web' HAVING count(*) = 2540"
        while not _rows(server.url, done):
            time.sleep(0.1)
        return queryable, time.monotonic() - acknowledged
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tables", type=int, default=1000,
                        help="warehouse.max_tables_per_source (default: the default, 1000)")
    args = parser.parse_args()
    canary, web = [], []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="trackd-bench-") as tmp:
            queryable, loaded = run_once(Path(tmp), args.tables)
        canary.append(queryable)
        web.append(loaded)
        print(f"run {i + 1}: canary queryable {queryable:.2f} s after its 200; "
              f"web all loaded {loaded:.1f} s after it", flush=True)
    print(f"median of {args.runs}: canary {statistics.median(canary):.2f} s "
          f"(min {min(canary):.2f}, max {max(canary):.2f}); "
          f"web all loaded {statistics.median(web):.1f} s")


if __name__ == "__main__":
    main()
