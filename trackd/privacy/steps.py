"""What each store's step of a regulation does; `service` runs the steps in order.

- `suppression`: the subjects' hashes added to (UNSUPPRESS: removed from) the list; done once
  every gateway worker has acknowledged the new list (on NATS, where gateways run on other
  hosts: `shared.APPLY_SECONDS` after the shared list changed, by when every gateway that can
  reach NATS has read it);
- `log`: the subjects' messages erased from the log (`LogErasure`: every SQLite shard's frames,
  quarantine and violations, or the NATS stream's messages, `trackd.log.jetstream_erase`);
- `warehouse`: their rows deleted from every table; on DuckDB the file is then rewritten
  (pending deletions share one rewrite, `privacy.rewrite_delay` seconds after the first). A
  warehouse without an erasure fails this store (never a silent FINISHED);
- `archive`: Parquet files rewritten without their rows (after one archive flush interval, so
  that records the archive held in memory before the log was erased are on disk by then);
- `memory`: what the console holds in memory and in counts.json (live stream buffers, schema
  samples) that holds an id;
- `ledgers`: their rows in every destination's delivery ledger (history, queue and dead
  letters) deleted;
- `destinations`: Segment's delete event sent to each destination with `deletions = true`
  (DELETE_ONLY, SUPPRESS_WITH_DELETE), through its ledger with the usual retries; done once
  delivered (a dead letter makes the regulation PARTIAL_SUCCESS);
- `files`: every file under the data dir scanned for the ids' bytes; an SQLite file still
  holding them (free pages from before) is VACUUMed, any other is reported.

A USER_ID deletion first widens its subjects with the anonymous ids linked to the users (the
warehouse's identity graph and the messages still in the log), in its `log` step. Each step is
idempotent: after a crash a regulation runs again from the start.

`StoreSteps` is the per-store half of `service.PrivacyService`, which sets the state it uses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from trackd.observability import get_logger
from trackd.privacy import notify
from trackd.privacy.erase import holds_bytes, scrub_sqlite
from trackd.privacy.keys import Keys
from trackd.privacy.ledgers import erase_ledgers
from trackd.privacy.regulations import Regulations, Work
from trackd.privacy.stores import ArchiveEraser, LogErasure, RewriteBatcher, WarehouseSide
from trackd.privacy.subjects import Subjects
from trackd.privacy.suppression import (
    REFRESH_SECONDS,
    acknowledged,
    read_list,
    suppression_path,
    write_list,
)

if TYPE_CHECKING:  # nats-py is imported only where the log is NATS
    from trackd.privacy.regulations_kv import KvRegulations
    from trackd.privacy.shared import SharedState

log = get_logger("privacy")
ACK_TIMEOUT = 30.0
NOTIFY_POLL = 0.5


class StoreSteps:
    """Runs one store's step of a regulation (`_store`); the state is set by the service."""

    data_dir: Path
    run_dir: Path
    workers: int
    shared: SharedState | None
    keys: Keys | None
    regulations: Regulations | KvRegulations
    log_erasure: LogErasure
    warehouse: WarehouseSide | None
    archive: ArchiveEraser | None
    archive_flush: float
    ledger_dir: Path | None
    notify: dict[str, tuple[Path, list[str]]]
    forgetters: list[Callable[[Callable[[bytes], bool]], Awaitable[int]]]
    batcher: RewriteBatcher
    _archived: dict[str, float]
    _erasing: asyncio.Lock
    _suppressing: asyncio.Lock

    @property
    def stores(self) -> dict[str, bool]:
        """Which optional stores exist here (for the list of stores of a new regulation)."""
        return {"warehouse": self.warehouse is not None, "archive": self.archive is not None,
                "memory": bool(self.forgetters),
                "destinations": bool(self.notify)}


    async def _store(self, name: str, work: Work, subjects: Subjects) -> int:
        """Run one store; rows (or files) removed, negative when some could not be."""
        if name == "suppression":
            return await self._suppress(work)
        if name == "log":
            await self._widen(work, subjects)
            async with self._erasing:
                return await self.log_erasure.erase(subjects)
        if name == "warehouse" and self.warehouse is not None:
            async with self._erasing:
                rows = await self.warehouse.erase(subjects.user_ids, subjects.anonymous_ids,
                                                  subjects.sources)
            if self.warehouse.rewrites:
                await self.batcher.request()
            return rows
        if name == "archive" and self.archive is not None:
            await asyncio.sleep(self.archive_flush)
            async with self._erasing:
                self._archived[work.id] = time.time() - 1.0
                return await asyncio.to_thread(self.archive, subjects.all_ids(),
                                               subjects.holds_bytes, subjects.sources, 0.0)
        if name == "ledgers" and self.ledger_dir is not None:
            async with self._erasing:
                return await asyncio.to_thread(erase_ledgers, self.ledger_dir, subjects)
        if name == "destinations":
            return await self._notify(work, subjects)
        if name == "memory":
            pattern = subjects.pattern()
            return sum([await forget(lambda b: pattern.search(b) is not None)
                        for forget in self.forgetters])
        if name == "files":
            async with self._erasing:
                # Parquet is compressed: no byte scan sees into it. So archive files written
                # since the archive's store ran (a flush that was late) are looked at again.
                since = self._archived.pop(work.id, None)
                if self.archive is not None and since is not None:
                    await asyncio.to_thread(self.archive, subjects.all_ids(),
                                            subjects.holds_bytes, subjects.sources, since)
                return await asyncio.to_thread(self._scrub_files, subjects)
        if name in ("warehouse", "archive"):  # listed when it was recorded, not wired now
            raise LookupError(f"no {name} is wired in this server now: nothing was erased "
                              "from it")
        return 0

    async def _notify(self, work: Work, subjects: Subjects) -> int:
        """Delete events to each destination with `deletions = true` (of these sources);
        returns once every one is delivered (and forgotten), -N if N were dead-lettered."""
        events = notify.delete_events(work.id, subjects)
        ids = [e.message_id for e in events]
        targets = [path for path, sources in self.notify.values()
                   if not sources or subjects.sources is None or set(sources) & subjects.sources]
        for path in targets:
            await asyncio.to_thread(notify.enqueue, path, events)
        dead = 0
        for path in targets:
            while True:
                states = await asyncio.to_thread(notify.states, path, ids)
                if all(s in ("delivered", "dead", "gone") for s in states):
                    break
                await asyncio.sleep(NOTIFY_POLL)
            dead += states.count("dead")
            await asyncio.to_thread(notify.forget_delivered, path, ids, subjects)
        return -dead if dead else len(events) * len(targets)

    async def _widen(self, work: Work, subjects: Subjects) -> None:
        """Add the users' linked anonymous ids, and keep them for a resume."""
        if not subjects.user_ids:
            return
        if self.warehouse is not None:
            subjects.anonymous_ids |= await self.warehouse.linked(subjects.user_ids,
                                                                  subjects.sources)
        await self.log_erasure.widen(subjects)
        await asyncio.to_thread(self.regulations.set_subject_ids, work.id, {
            "user_ids": sorted(subjects.user_ids),
            "anonymous_ids": sorted(subjects.anonymous_ids)})

    async def _suppress(self, work: Work) -> int:
        kind = "u" if work.subject_type == "USER_ID" else "a"
        ids = work.ids.get("user_ids" if kind == "u" else "anonymous_ids", [])
        assert self.keys is not None  # loaded before any regulation runs
        hashes = {self.keys.subject_hash(kind, i) for i in ids}

        def change(current: set[str]) -> set[str]:
            return current - hashes if work.type == "UNSUPPRESS" else current | hashes

        if self.shared is not None:
            from trackd.privacy.shared import APPLY_SECONDS

            async with self._suppressing:
                await self.shared.change_suppressed(change)
            await asyncio.sleep(APPLY_SECONDS)  # every gateway reads it within this
            return len(hashes)
        path = suppression_path(self.data_dir)
        async with self._suppressing:
            _version, current = await asyncio.to_thread(read_list, path)
            version = await asyncio.to_thread(write_list, path, change(current))
        deadline = time.monotonic() + ACK_TIMEOUT
        while await asyncio.to_thread(acknowledged, self.run_dir, self.workers) < version:
            if time.monotonic() > deadline:
                raise TimeoutError("a gateway worker did not take the new suppression list")
            await asyncio.sleep(REFRESH_SECONDS / 2)
        return len(hashes)

    async def _rewrite(self) -> None:
        if self.warehouse is not None:
            async with self._erasing:
                await self.warehouse.rewrite()

    def _scrub_files(self, subjects: Subjects) -> int:
        """Scan every file under the data dir; clean SQLite files; -N if N files still hold
        a subject's bytes, else the number of files cleaned."""
        cleaned, left = 0, []
        skip = {self.data_dir / "privacy" / "regulations.db",
                self.data_dir / "privacy" / "regulations.db-journal"}
        for path in sorted(p for p in self.data_dir.rglob("*") if p.is_file()):
            if path in skip or not holds_bytes(path, subjects):
                continue
            database = path
            for suffix in ("-wal", "-shm", "-journal"):
                if path.name.endswith(suffix):
                    database = path.with_name(path.name[: -len(suffix)])
            if database.name.endswith(".db") and database.exists() and scrub_sqlite(
                    database, subjects):
                cleaned += 1
                continue
            left.append(str(path.relative_to(self.data_dir)))
        if left:
            log.warning("files still hold a deleted subject's bytes",
                        extra={"files": ",".join(left)})
            return -len(left)
        return cleaned
