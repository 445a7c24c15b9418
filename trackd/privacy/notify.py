"""Deletions sent on to destinations configured with `deletions = true`.

For each subject of a DELETE_ONLY or SUPPRESS_WITH_DELETE regulation, Segment's delete event
`{"type": "delete", "userId": ID, "messageId": ..., "timestamp": ...}` (`anonymousId` for an
ANONYMOUS_ID subject) is added to the destination's ledger as a pending row: its worker sends
it like any message, with the same retries, backoff and dead letters. The row's messageId and
ordering key name the regulation, not the subject. Once delivered, the row is deleted (with
secure_delete: the ledger would otherwise hold the id again); a dead letter stays, for a
replay, and the regulation reports that destination as failed.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from trackd.destinations.ledger import Intake, Ledger
from trackd.messages.enrich import iso
from trackd.privacy.erase import connect_secure, scrub_sqlite
from trackd.privacy.subjects import Subjects

SOURCE = "privacy"


def delete_events(regulation_id: str, subjects: Subjects) -> list[Intake]:
    now = iso(datetime.now(UTC))
    out = []
    named = [("userId", i) for i in sorted(subjects.user_ids)] + [
        ("anonymousId", i) for i in sorted(subjects.anonymous_ids)]
    for index, (key, value) in enumerate(named):
        message_id = f"delete-{regulation_id}-{index}"
        body = json.dumps({"type": "delete", key: value, "messageId": message_id,
                           "timestamp": now, "receivedAt": now}).encode()
        out.append(Intake(message_id, SOURCE, f"privacy:{regulation_id}:{index}", "delete",
                          None, now, body))
    return out


def enqueue(path: Path, events: list[Intake]) -> None:
    """Add the delete events to a destination's ledger (a second connection to its file)."""
    ledger = Ledger(path)
    try:
        ledger.add(events, time.time())
    finally:
        ledger.close()


def states(path: Path, message_ids: list[str]) -> list[str]:
    """The ledger state of each delete event ("gone" once forgotten)."""
    ledger = Ledger(path, readonly=True)
    try:
        out = []
        for message_id in message_ids:
            rows = ledger.find(message_id)
            out.append(str(rows[0]["state"]) if rows else "gone")
        return out
    finally:
        ledger.close()


def forget_delivered(path: Path, message_ids: list[str], subjects: Subjects) -> None:
    """Delete the delivered delete events' rows, leaving no byte of them in the file."""
    conn = connect_secure(path)
    try:
        conn.executemany("DELETE FROM deliveries WHERE message_id = ? AND source = ? "
                         "AND state = 'delivered'", [(m, SOURCE) for m in message_ids])
    finally:
        conn.close()
    scrub_sqlite(path, subjects)
