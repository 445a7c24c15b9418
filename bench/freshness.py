"""Freshness: time from a 200 to the row being queryable in the warehouse, under load.

While wrk sends analytics-python batches paced to a given rate (about half of trackd's maximum
measured earlier in the same run), a prober POSTs one tagged track event every 50 ms and
records when its 200 arrives; a poller asks the running server's admin API
(`POST /api/v1/query`, over `<data_dir>/run/admin.sock`, the path `trackd query` uses) every
50 ms which probe ids have reached `<source>.tracks`. Freshness = first seen - 200, so it
includes the poll interval and the query's own time: an upper bound by up to ~50 ms + a query.
The messages in the warehouse are counted every second, during the load and after it while
the loader catches up: that second rate is the most the warehouse loads with the machine to
itself, which bounds what trackd sustains end to end (`runner.run_freshness` then measures
freshness again at half of it).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

from targets import ADMIN_TOKEN, AUTH, SOURCE, Running


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("trackd-admin", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def warehouse_query(data_dir: Path, sql: str, timeout: float = 30.0) -> tuple[int, Any]:
    """Run SQL through the running server's admin API; (status, decoded body)."""
    conn = _UnixHTTPConnection(str(data_dir / "run" / "admin.sock"), timeout)
    try:
        conn.request("POST", "/api/v1/query", json.dumps({"sql": sql}).encode(),
                     {"Content-Type": "application/json",
                      "Authorization": f"Bearer {ADMIN_TOKEN}"})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode("utf-8", "replace")


def warehouse_ready(server: Running, wait: float = 10.0) -> tuple[bool, str]:
    """Whether the server loads a warehouse we can query: a probe track must show up."""
    assert server.data_dir is not None
    deadline = time.monotonic() + wait
    last = "no answer"
    while time.monotonic() < deadline:
        path = server.data_dir / "warehouse.duckdb"
        try:
            status, body = warehouse_query(server.data_dir,
                                           f"SELECT count(*) AS n FROM {SOURCE}.tracks", 5)
        except OSError as exc:
            status, body = 0, str(exc)
        if status == 200 and path.exists():
            return True, "ok"
        last = f"{status}: {str(body)[:200]}"
        if not path.exists():
            last = f"no {path.name} in the data dir ({last})"
        time.sleep(0.5)
    return False, last


def measure(server: Running, *, seconds: float, run_id: str, load_stops_at: float,
            interval: float = 0.05, wait_after: float = 30.0) -> dict[str, Any]:
    """Send probes for `seconds` and wait for each to be queryable (up to `wait_after` more).

    Percentiles count a probe never seen as later than any seen one; a percentile that falls
    among those is None ("more than wait_after"). The messages in the warehouse are counted
    every second: `load_rate_messages_s` is the rate while the background load ran (until
    `load_stops_at` seconds after the start), `drain_rate_messages_s` the rate after it, while
    the loader still had a backlog and the machine to itself (None: it had no backlog)."""
    assert server.data_dir is not None
    acked: dict[str, float] = {}
    seen: dict[str, float] = {}
    errors: list[str] = []
    lock = threading.Lock()
    sending = threading.Event()
    sending.set()

    def prober() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        n = 0
        next_at = time.monotonic()
        end = next_at + seconds
        while time.monotonic() < end:
            n += 1
            message_id = f"{run_id}-probe-{n}"
            body = json.dumps({"userId": "freshness-probe", "event": "Freshness Probe",
                               "messageId": message_id, "properties": {"n": n}}).encode()
            try:
                conn.request("POST", "/v1/track", body, {"Content-Type": "application/json",
                                                         "Authorization": AUTH})
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    with lock:
                        acked[message_id] = time.monotonic()
                else:
                    errors.append(f"probe answered {response.status}")
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"probe failed: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        conn.close()
        sending.clear()

    thread = threading.Thread(target=prober, daemon=True)
    thread.start()
    started = time.monotonic()
    loaded: list[tuple[float, int]] = []  # (seconds since start, messages in the warehouse)
    next_count = started
    give_up = None
    while True:
        with lock:
            pending = [mid for mid in acked if mid not in seen]
        if not pending and not sending.is_set():
            break
        if not sending.is_set():
            give_up = give_up or time.monotonic() + wait_after
            if time.monotonic() > give_up:
                break
        if pending:
            ids = ", ".join(f"'{mid}'" for mid in pending[:500])
            status, body = warehouse_query(
                server.data_dir, f"SELECT id FROM {SOURCE}.tracks WHERE id IN ({ids})")
            now = time.monotonic()
            if status == 200:
                for row in body.get("rows", []):
                    seen.setdefault(str(row["id"]), now)
            else:
                errors.append(f"query answered {status}: {str(body)[:200]}")
        if time.monotonic() >= next_count:
            next_count += 1.0
            count = _messages_loaded(server.data_dir)
            if count is not None:
                loaded.append((time.monotonic() - started, count))
        time.sleep(interval)
    thread.join()
    # The backlog left after the last probe: keep counting while it drains (up to 60 s).
    while time.monotonic() - started < load_stops_at + 60:
        if len(loaded) >= 2 and loaded[-1][0] >= load_stops_at and loaded[-1][1] == loaded[-2][1]:
            break
        time.sleep(max(0.0, next_count - time.monotonic()))
        next_count += 1.0
        count = _messages_loaded(server.data_dir)
        if count is None:
            break
        loaded.append((time.monotonic() - started, count))
    delays = sorted(seen[mid] - acked[mid] for mid in acked if mid in seen)
    unseen = len(acked) - len(delays)
    return {
        "probes_acked": len(acked), "probes_seen": len(delays), "wait_after_s": wait_after,
        "p50_s": percentile_with_unseen(delays, unseen, 50),
        "p95_s": percentile_with_unseen(delays, unseen, 95),
        "max_s": None if unseen or not delays else delays[-1],
        "loaded_messages": loaded,
        "load_rate_messages_s": _rate([x for x in loaded if x[0] <= load_stops_at]),
        "drain_rate_messages_s": _rate([x for x in loaded if x[0] >= load_stops_at],
                                       min_samples=3),
        "errors": errors[:10], "error_count": len(errors),
    }


def _messages_loaded(data_dir: Path) -> int | None:
    """Messages in the warehouse (every type: the ledger `_trackd.messages`); None on error."""
    status, body = warehouse_query(data_dir, "SELECT count(*) AS n FROM _trackd.messages")
    return int(body["rows"][0]["n"]) if status == 200 else None


def percentile_with_unseen(delays: list[float], unseen: int, q: float) -> float | None:
    """Percentile over every probe; probes never seen count as infinitely late (None)."""
    total = len(delays) + unseen
    if not total:
        return None
    index = min(total - 1, max(0, round(q / 100 * (total - 1))))
    return delays[index] if index < len(delays) else None


def _rate(samples: list[tuple[float, int]], min_samples: int = 2) -> float | None:
    """Rows/s the warehouse loaded, between the first and the last sample that grew (None
    with fewer than `min_samples` such samples: a drain of one batch is no rate)."""
    growing = [s for i, s in enumerate(samples) if i == 0 or s[1] > samples[i - 1][1]]
    if len(growing) < max(2, min_samples) or growing[-1][0] <= growing[0][0]:
        return None
    return (growing[-1][1] - growing[0][1]) / (growing[-1][0] - growing[0][0])
