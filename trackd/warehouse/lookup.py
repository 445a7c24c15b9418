""""Where is my event", the warehouse's part: loaded where and when, or why not.

    {"found": true,
     "accepted": [{"source": "web", "type": "track", "receivedAt": ...}],
     "loaded": [{"schema": "web", "table": "tracks", "type": "track",
                 "receivedAt": ..., "loadedAt": ...}, ...],
     "duplicates": [{"schema": "web", "receivedAt": ..., "seenAt": ...,
                     "duplicateOf": {"receivedAt": ..., "loadedAt": ...}}],
     "failed": [{"schema": "web", "error": ..., "failedAt": ...}]}

`found` is true when the warehouse knows the messageId in any of these ways. `accepted` lets
the answer say the message was accepted after the log has trimmed it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from trackd.warehouse.ledger import message_key
from trackd.warehouse.store import Readable


def iso(moment: datetime | None) -> str | None:
    """A naive UTC datetime from the warehouse as ISO-8601 with milliseconds and `Z`."""
    if moment is None:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class WarehouseLookup:
    """The `Lookup` of trackd.types for the warehouse. `sources` are the configured names."""

    def __init__(self, database: Readable, sources: Iterable[str]) -> None:
        self.database = database
        self.sources = list(sources)

    def lookup(self, message_id: str) -> dict[str, Any]:
        if not self.database.is_open:
            return {"found": False, "accepted": [], "loaded": [], "duplicates": [], "failed": [],
                    "note": "the warehouse is not open"}
        keys = [message_key(source, message_id) for source in self.sources]
        with self.database.reading() as cur:
            loaded = cur.execute(
                "SELECT source, unnest(tables), type, received_at, loaded_at "
                "FROM _trackd.messages WHERE key IN (SELECT unnest(?::BIGINT[])) "
                "AND message_id = ?", [keys, message_id]).fetchall()
            duplicates = cur.execute(
                "SELECT source, received_at, seen_at, original_received_at, "
                "original_loaded_at, shard, \"offset\" FROM _trackd.duplicates "
                "WHERE message_id = ? ORDER BY seen_at", [message_id]).fetchall()
            failed = cur.execute(
                "SELECT source, error, failed_at, shard, \"offset\" FROM _trackd.load_errors "
                "WHERE message_id = ? ORDER BY failed_at", [message_id]).fetchall()
        accepted = {(s, k, iso(r)) for s, _, k, r, _ in loaded}
        return {
            "found": bool(loaded or duplicates or failed),
            "accepted": [{"source": s, "type": k, "receivedAt": r}
                         for s, k, r in sorted(accepted)],
            "loaded": [{"schema": s, "table": t, "type": k, "receivedAt": iso(r),
                        "loadedAt": iso(at)} for s, t, k, r, at in loaded],
            "duplicates": [{"schema": s, "receivedAt": iso(r), "seenAt": iso(seen),
                            "log": {"shard": shard, "offset": offset},
                            "duplicateOf": {"receivedAt": iso(orig_r),
                                            "loadedAt": iso(orig_at)}}
                           for s, r, seen, orig_r, orig_at, shard, offset in duplicates],
            "failed": [{"schema": s, "error": e, "failedAt": iso(at),
                        "log": {"shard": shard, "offset": offset}}
                       for s, e, at, shard, offset in failed],
        }
