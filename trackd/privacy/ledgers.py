"""Deletion in the destinations' delivery ledgers (`<data_dir>/destinations/*.db`): every row
of a subject's messages goes (history, pending rows and dead letters), with secure_delete on
and the WAL truncated, so no ledger keeps an id of theirs."""

from __future__ import annotations

from pathlib import Path

from trackd.privacy.erase import connect_secure, scrub_sqlite
from trackd.privacy.subjects import Subjects


def erase_ledgers(directory: Path, subjects: Subjects) -> int:
    removed = 0
    keys = {f"user:{i}" for i in subjects.all_ids()}
    for path in sorted(directory.glob("*.db")) if directory.is_dir() else []:
        conn = connect_secure(path)
        try:
            doomed = []
            for row_id, source, user_key, body in conn.execute(
                    "SELECT id, source, user_key, body FROM deliveries"):
                if not subjects.in_source(source):
                    continue
                if user_key in keys or (body is not None and subjects.holds_bytes(bytes(body))):
                    doomed.append((row_id,))
            conn.executemany("DELETE FROM deliveries WHERE id = ?", doomed)
            removed += len(doomed)
        finally:
            conn.close()
        scrub_sqlite(path, subjects)
    return removed
