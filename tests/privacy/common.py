"""Shared by the privacy tests: real SDK traffic, regulations over HTTP, byte scans."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq

from tests.conftest import Server, eventually

ADMIN = {"Authorization": "Bearer test-admin-token"}
RUN = os.urandom(3).hex()

CONFIG = """
[server]
admin_token = "test-admin-token"

[privacy]
rewrite_delay = {delay}

[archive]
flush_interval = 0.5

[log]
trim_interval = 3600

[[sources]]
name = "web"
write_keys = ["wk_web"]
"""


def warehouse_config(url: str) -> str:
    """The `[warehouse]` table for `url` ("": none, the embedded DuckDB file)."""
    return f'\n[warehouse]\nurl = "{url}"\n' if url else ""


def sdk_traffic(server: Server, users: list[str], upload_size: int = 20) -> None:
    """Each user, with the real analytics-python SDK: anonymous visits, then identify (which
    links the anonymous id), a track, a page, an alias; flushed before returning. Each request
carries `upload_size` messages (5: one user's)."""
    from segment.analytics import Client

    errors: list[Any] = []
    client = Client("wk_web", host=server.url, max_retries=1, upload_size=upload_size,
                    on_error=lambda e, batch: errors.append(str(e)))
    for user in users:
        anonymous = f"anon-{user}"
        client.track(anonymous_id=anonymous, event="Viewed Pricing", properties={"who": user})
        client.page(anonymous_id=anonymous, name="Pricing")
        client.identify(user, {"email": f"{user}@example.com"}, anonymous_id=anonymous)
        client.track(user, "Order Completed", {"revenue": 10, "buyer": user})
        client.alias(f"old-{user}", user)
    client.flush()
    client.join()
    assert not errors, errors


def query(server: Server, sql: str) -> list[dict[str, Any]]:
    answer = httpx.post(server.url + "/api/v1/query", json={"sql": sql}, headers=ADMIN,
                        timeout=60)
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["rows"]
    return rows


def loaded(server: Server, users: list[str]) -> bool:
    """Every user's identify is in the warehouse and every user is in the archive."""
    quoted = ", ".join(f"'{u}'" for u in users)
    try:
        rows = query(server, f"SELECT count(DISTINCT user_id) AS n FROM web.identifies "
                             f"WHERE user_id IN ({quoted})")
    except AssertionError:
        return False
    return rows[0]["n"] == len(users) and set(users) <= archived_users(server.data_dir)


def archived_users(data_dir: Path) -> set[str]:
    found: set[str] = set()
    for path in (data_dir / "archive").rglob("*.parquet"):
        found.update(v for v in pq.read_table(path)["user_id"].to_pylist() if v)
    return found


def regulate(server: Server, kind: str, ids: list[str], subject_type: str = "USER_ID",
             **extra: Any) -> str:
    answer = httpx.post(server.url + "/api/v1/regulations", headers=ADMIN, timeout=30, json={
        "regulationType": kind, "subjectType": subject_type, "subjectIds": ids, **extra})
    assert answer.status_code == 200, answer.text
    regulation_id: str = answer.json()["data"]["regulateId"]
    return regulation_id


def regulation(server: Server, regulation_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{server.url}/api/v1/regulations/{regulation_id}", headers=ADMIN,
                       timeout=30)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()["data"]["regulation"]
    return found


def finished(server: Server, regulation_id: str, timeout: float = 90) -> dict[str, Any]:
    done: dict[str, Any] = eventually(
        lambda: (r := regulation(server, regulation_id))["status"] in (
            "FINISHED", "PARTIAL_SUCCESS", "FAILED") and r, timeout=timeout)
    assert done["status"] == "FINISHED", done
    return done


def files_holding(data_dir: Path, needle: bytes) -> list[str]:
    """Every file under the data dir whose raw bytes hold `needle` (WAL files included)."""
    out = []
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        try:
            if needle in path.read_bytes():
                out.append(str(path.relative_to(data_dir)))
        except OSError:
            continue
    return out
