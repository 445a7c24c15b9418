"""Retention runs by itself while the server runs (`privacy.retention_interval` made short):
warehouse rows and archive files older than `retention_days` go, newer ones stay."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx

from tests.conftest import Server, eventually
from tests.privacy.common import RUN, query, warehouse_config
from tests.warehouse.conftest import Log, enriched

CONFIG = """
[server]
admin_token = "test-admin-token"

[privacy]
retention_interval = {interval}

[archive]
flush_interval = 0.5

[[sources]]
name = "web"
write_keys = ["wk_web"]
retention_days = {days}
"""


def test_the_retention_timer_removes_old_rows_and_files_and_keeps_new_ones(
        warehouse_url: str, make_server: Callable[..., Server]) -> None:
    old_user, new_user = f"old-{RUN}", f"new-{RUN}"
    ten_days_ago = datetime.now(UTC) - timedelta(days=10)
    old_day = ten_days_ago.date().isoformat()
    received = ten_days_ago.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    # 1. retention off: messages received ten days ago (written to the server's log before
    # it starts) and new ones (sent over HTTP) are loaded and archived
    server = make_server(CONFIG.format(interval=86400, days=0) +
                         warehouse_config(warehouse_url), start=False)
    Log(server.data_dir / "log").write([
        enriched("track", userId=old_user, event="Old", received_at=received)
        for _ in range(3)])
    server.start()
    with httpx.Client(base_url=server.url, auth=("wk_web", ""), timeout=30) as client:
        for _ in range(2):
            assert client.post("/v1/track", json={"userId": new_user, "event": "New"}
                               ).status_code == 200
    archive = server.data_dir / "archive" / "source=web"

    def tracks() -> dict[str, int]:
        try:
            found = query(server, f"SELECT user_id, count(*) AS n FROM web.tracks WHERE "
                                  f"user_id IN ('{old_user}', '{new_user}') GROUP BY 1")
        except AssertionError:
            return {}
        return {r["user_id"]: r["n"] for r in found}

    def days() -> set[str]:
        return {p.parent.name.removeprefix("date=") for p in archive.rglob("*.parquet")}

    today = datetime.now(UTC).date().isoformat()
    eventually(lambda: tracks() == {old_user: 3, new_user: 2} and old_day in days() and
               len(days()) == 2, timeout=60)
    server.stop()

    # 2. retention_days = 5, run every second: the old ones go by themselves
    server.config_path.write_text(CONFIG.format(interval=1, days=5) +
                                  warehouse_config(warehouse_url))
    server.start()
    eventually(lambda: tracks() == {new_user: 2} and old_day not in days(), timeout=60)
    assert days() <= {today, (datetime.now(UTC) - timedelta(days=1)).date().isoformat()}
    assert days()  # the new messages' archive files stay
