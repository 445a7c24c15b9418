"""Destinations as the console shows them: health per destination, dead letters, replay.

Reads each ledger through a read-only connection of its own (the worker's stays free for the
worker). Replaying dead letters uses the worker's own ledger, so a delivered letter is marked
as `trackd replay --dead-letters` marks it.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from typing import Any

from trackd.admin.health import Health
from trackd.destinations.ledger import Ledger
from trackd.destinations.replay import Item, Replayer, Summary
from trackd.destinations.senders import build_sender
from trackd.destinations.worker import DestinationWorker
from trackd.types import Stage

REPLAY_LIMIT = 10_000


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


RECENT_ERROR = 3600.0
BEHIND = 60.0


def _health(last_error: Any, lag_seconds: float, now: float) -> str:
    """"failing" after an error in the last hour, "behind" a minute or more; else "healthy"."""
    if last_error is not None and (last_error[1] or 0) > now - RECENT_ERROR:
        return "failing"
    return "behind" if lag_seconds >= BEHIND else "healthy"


class DestinationsView:
    def __init__(self, stages: list[Stage], health: Health) -> None:
        self.workers = {s.settings.name: s for s in stages if isinstance(s, DestinationWorker)}
        self.health = health
        self._conns: dict[str, sqlite3.Connection] = {}
        self._lock = threading.Lock()

    def _conn(self, name: str) -> sqlite3.Connection:
        conn = self._conns.get(name)
        if conn is None:
            path = self.workers[name].ledger.path
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False, timeout=30)
            self._conns[name] = conn
        return conn

    def summary(self, letters: int = 0) -> list[dict[str, Any]]:
        """Each destination's health and counts, with its newest `letters` dead letters
        under "deadLetters" when asked: all read in one snapshot of its ledger, so a page
        never lists a dead letter that its counts do not include."""
        now = datetime.now(UTC)
        out = []
        for name, worker in sorted(self.workers.items()):
            with self._lock:
                conn = self._conn(name)
                conn.execute("BEGIN")
                try:
                    counts = {state: n for state, n in conn.execute(
                        "SELECT state, count(*) FROM deliveries GROUP BY state")}
                    errors = conn.execute(
                        "SELECT error, last_try FROM deliveries WHERE state = 'dead' "
                        "AND error IS NOT NULL ORDER BY id DESC LIMIT 1").fetchall()
                    errors += conn.execute(
                        "SELECT error, last_try FROM deliveries WHERE state IN "
                        "('pending', 'retrying') AND error IS NOT NULL "
                        "ORDER BY last_try DESC LIMIT 1").fetchall()
                    dead = self._dead_letters(conn, letters) if letters else None
                finally:
                    conn.execute("COMMIT")
            last = max(errors, key=lambda r: r[1] or 0, default=None)
            lag = self.health.lag(worker.name, now)
            active = counts.get("pending", 0) + counts.get("retrying", 0)
            row: dict[str, Any] = {
                "name": name, "type": worker.settings.type,
                "delivered": counts.get("delivered", 0), "pending": counts.get("pending", 0),
                "retrying": counts.get("retrying", 0), "dead": counts.get("dead", 0),
                "skipped": counts.get("skipped", 0),
                "lastError": None if last is None else {"error": last[0], "at": _iso(last[1])},
                "lag": {"messages": lag["messages"] + active, "seconds": lag["seconds"]},
                "health": _health(last, lag["seconds"], now.timestamp())}
            if dead is not None:
                row["deadLetters"] = dead
            out.append(row)
        return out

    def dead_letters(self, name: str, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            return self._dead_letters(self._conn(name), limit)

    @staticmethod
    def _dead_letters(conn: sqlite3.Connection, limit: int) -> list[dict[str, Any]]:
        rows = conn.execute(
            "SELECT id, message_id, source, type, event, received_at, attempts, status, "
            "error, done_at FROM deliveries WHERE state = 'dead' ORDER BY id DESC LIMIT ?",
            (limit,)).fetchall()
        return [{"id": i, "messageId": m, "source": s, "type": t, "event": e, "receivedAt": r,
                 "attempts": a, "status": st, "error": err, "deadAt": _iso(done)}
                for i, m, s, t, e, r, a, st, err, done in rows]

    async def replay(self, name: str) -> Summary:
        """Send the destination's dead letters again (at most REPLAY_LIMIT per call)."""
        worker = self.workers[name]
        ledger: Ledger = worker.ledger
        rows = ledger.dead_letters(limit=REPLAY_LIMIT)
        sender = build_sender(worker.settings)
        try:
            return await Replayer(worker.settings, sender, ledger=ledger).run(
                Item(s, m, body, i) for i, s, m, body in rows)
        finally:
            await sender.aclose()

    def close(self) -> None:
        with self._lock:
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()


def summary_json(summary: Summary) -> dict[str, Any]:
    return {"destination": summary.destination, "delivered": summary.delivered,
            "failed": summary.failed, "skipped": summary.skipped,
            "lastError": summary.last_error, "line": summary.line()}
