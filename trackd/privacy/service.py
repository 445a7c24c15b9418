"""The pipeline stage that runs regulations in the background, store by store.

A regulation is recorded first (`Regulations.create`, INITIALIZED) and answered at once; this
stage then runs it: RUNNING, then each of its stores in order, each with its own status:

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

On the NATS log every pipeline host runs the local stores (archive, memory, ledgers, files)
on its own data dir, and the regulation ends once each has reported (`trackd.privacy.members`).

A USER_ID deletion first widens its subjects with the anonymous ids linked to the users (the
warehouse's identity graph and the messages still in the log). A regulation is FINISHED when
every store is, PARTIAL_SUCCESS when some failed; its ids are then forgotten. After a crash,
the unfinished regulations are run again from the start (each step is idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from trackd.observability import get_logger
from trackd.privacy import notify
from trackd.privacy.erase import SqliteLogErasure, holds_bytes, scrub_sqlite
from trackd.privacy.keys import Keys, load_keys
from trackd.privacy.ledgers import erase_ledgers
from trackd.privacy.regulations import Regulations, Work, stores_of
from trackd.privacy.retention import retention_forever
from trackd.privacy.subjects import Subjects
from trackd.privacy.suppression import (
    REFRESH_SECONDS,
    acknowledged,
    read_list,
    suppression_path,
    write_list,
)

if TYPE_CHECKING:  # nats-py is imported only where the log is NATS
    from trackd.privacy.members import Members
    from trackd.privacy.regulations_kv import KvRegulations
    from trackd.privacy.shared import SharedState

log = get_logger("privacy")
ACK_TIMEOUT = 30.0
NOTIFY_POLL = 0.5


class WarehouseSide(Protocol):
    """What a deletion needs of the warehouse (`trackd.warehouse.erasure`: one per store kind,
    picked by `backend.server_erasure`). `rewrites`: deleted rows' bytes are gone only after
    `rewrite` (DuckDB's file), which pending deletions then share."""

    @property
    def rewrites(self) -> bool: ...

    async def linked(self, user_ids: set[str], sources: set[str] | None) -> set[str]: ...

    async def erase(self, user_ids: set[str], anonymous_ids: set[str],
                    sources: set[str] | None) -> int: ...

    async def rewrite(self) -> None: ...

    async def expire(self, source: str, cutoff: datetime) -> int: ...


class LogErasure(Protocol):
    """What a deletion needs of the log: `SqliteLogErasure` (the embedded shards) or
    `trackd.log.jetstream_erase.JetStreamErasure` (the NATS stream)."""

    async def widen(self, subjects: Subjects) -> None: ...

    async def erase(self, subjects: Subjects) -> int: ...

    async def expire_quarantine(self, source: str, cutoff: str) -> int:
        """Retention: a source's quarantined messages received before `cutoff` (ISO-8601)."""


ArchiveEraser = Callable[[set[str], Callable[[bytes], bool], "set[str] | None", float], int]
"""(ids, matches, sources, newer_than) -> rows removed from the archive files written after
`newer_than` (a time.time(); 0: every file)."""


class RewriteBatcher:
    """Pending warehouse deletions share one rewrite, `delay` seconds after the first."""

    def __init__(self, delay: float, rewrite: Callable[[], Awaitable[None]]) -> None:
        self.delay = delay
        self.rewrite = rewrite
        self._pending: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None

    async def request(self) -> None:
        """Return once a rewrite that began after this call has finished."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(future)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._later())
        await future

    async def _later(self) -> None:
        while self._pending:
            await asyncio.sleep(self.delay)
            waiting, self._pending = self._pending, []
            try:
                await self.rewrite()
            except Exception as exc:
                for future in waiting:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for future in waiting:
                    if not future.done():
                        future.set_result(None)


class PrivacyService:
    """Runs regulations; `submit` records one and wakes the runner."""

    name = "privacy"

    def __init__(self, data_dir: Path, run_dir: Path, log_dir: Path, *, workers: int,
                 rewrite_delay: float, warehouse: WarehouseSide | None = None,
                 archive: ArchiveEraser | None = None, archive_flush: float = 0.0,
                 ledger_dir: Path | None = None,
                 notify: dict[str, tuple[Path, list[str]]] | None = None,
                 retention: dict[str, float] | None = None, retention_interval: float = 86400.0,
                 archive_root: Path | None = None, log_erasure: LogErasure | None = None,
                 shared: SharedState | None = None) -> None:
        """`notify`: destinations with `deletions = true`, name -> (ledger, its sources);
        `retention`: source -> retention_days (applied every `retention_interval` seconds);
        `shared`: the NATS deployment's shared privacy state (keys, suppression list,
        regulations), else the data dir's files."""
        self.data_dir = data_dir
        self.run_dir = run_dir
        self.log_dir = log_dir
        self.workers = workers
        self.shared = shared
        self.keys: Keys | None = None if shared is not None else load_keys(data_dir)
        self.regulations: Regulations | KvRegulations
        if shared is None:
            self.regulations = Regulations(data_dir)
        else:
            from trackd.privacy.regulations_kv import KvRegulations

            self.regulations = KvRegulations(shared)
        self.log_erasure = log_erasure or SqliteLogErasure(log_dir)
        self.warehouse = warehouse
        self.archive = archive
        self.archive_flush = archive_flush
        self.ledger_dir = ledger_dir
        self.notify = notify or {}
        self.retention = retention or {}
        self.retention_interval = retention_interval
        self.archive_root = archive_root
        # What keeps messages in memory (the console: live buffers, schema samples): each is
        # called with a matcher of the subjects' bytes and returns how many items it dropped.
        self.forgetters: list[Callable[[Callable[[bytes], bool]], Awaitable[int]]] = []
        self.batcher = RewriteBatcher(rewrite_delay, self._rewrite)
        self._wake = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._hosting: dict[str, asyncio.Task[None]] = {}  # other hosts' regulations
        self.members: Members | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._retention: asyncio.Task[None] | None = None
        self._archived: dict[str, float] = {}  # regulation -> when its archive store ran
        self._erasing = asyncio.Lock()  # one store erasure at a time
        self._suppressing = asyncio.Lock()

    @property
    def stores(self) -> dict[str, bool]:
        """Which optional stores exist here (for the list of stores of a new regulation)."""
        return {"warehouse": self.warehouse is not None, "archive": self.archive is not None,
                "memory": bool(self.forgetters),
                "destinations": bool(self.notify)}

    async def start(self) -> None:
        if not isinstance(self.regulations, Regulations):
            from trackd.privacy.members import Members

            self.regulations.attach(asyncio.get_running_loop())
            self.members = Members(self.regulations, self.data_dir)
            self.regulations.host = self.members.host
            self._hosting["beat"] = asyncio.create_task(self.members.beat_forever())
        self._task = asyncio.create_task(self._run())
        self._retention = asyncio.create_task(retention_forever(
            self.retention, log_dir=self.log_dir, archive=self.archive_root,
            warehouse=self.warehouse, interval=self.retention_interval,
            quarantine=self.log_erasure.expire_quarantine))

    async def stop(self) -> None:
        # nats-py may turn a cancellation into one of its errors, which the loops below
        # survive: they also end on this flag
        self._stopping = True
        if self.members is not None:
            self.members.stopping = True
        tasks = [t for t in [self._task, self._retention, *self._running.values(),
                             *self._hosting.values()] if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.regulations.close()
        if self.shared is not None:
            await self.shared.close()  # this member's lease runs out (`members`)

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        if self.shared is not None:
            await self._load_keys(self.shared)
        poll = getattr(self.regulations, "poll", None)  # shared: recorded by another pipeline
        while not self._stopping:
            self._wake.clear()
            try:
                unfinished = await asyncio.to_thread(self.regulations.unfinished)
            except Exception:
                if poll is None:
                    raise
                log.warning("the shared regulations cannot be read now", exc_info=True)
                unfinished = []
            for work in unfinished:
                if work.id not in self._running:
                    task = asyncio.create_task(self._execute(work))
                    self._running[work.id] = task
                    task.add_done_callback(self._forget)
            if self.members is not None:
                await self._host_pending(self.members)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll)

    async def _load_keys(self, shared: SharedState) -> None:
        async def load() -> None:
            self.keys = await shared.keys()

        if not await shared.connect(load):
            await shared.load_forever(load)

    def _forget(self, task: asyncio.Task[None]) -> None:
        for key, running in list(self._running.items()):
            if running is task:
                del self._running[key]
        if not task.cancelled() and task.exception() is not None:  # its record unreachable
            log.warning("a regulation stopped before its end; it runs again",
                        exc_info=task.exception())

    async def _execute(self, work: Work) -> None:
        reg = self.regulations
        await asyncio.to_thread(reg.set_status, work.id, "RUNNING")
        subjects = Subjects(set(work.ids.get("user_ids", ())),
                            set(work.ids.get("anonymous_ids", ())),
                            None if work.sources is None else set(work.sources))
        failed = 0
        local: list[dict[str, object]] = []  # this host's part, for `members`
        for name, status in work.stores:
            if status == "FINISHED":  # done before a crash
                local.append({"name": name, "status": status})
                continue
            await asyncio.to_thread(reg.set_store, work.id, name, "RUNNING")
            try:
                rows = await self._store(name, work, subjects)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failed += 1
                log.exception("a regulation failed in one store",
                              extra={"regulation": work.id, "store": name})
                await asyncio.to_thread(reg.set_store, work.id, name, "FAILED", 0,
                                        f"{type(exc).__name__}: {exc}"[:500])
                local.append({"name": name, "status": "FAILED"})
                continue
            status = "FINISHED" if rows >= 0 else "FAILED"
            if rows < 0:
                failed += 1
            await asyncio.to_thread(reg.set_store, work.id, name, status, abs(rows))
            local.append({"name": name, "status": status, "rows": abs(rows)})
        hosts_failed = 0
        if self.members is not None:  # the other pipeline hosts' local stores
            from trackd.privacy.members import LOCAL

            mine = [s for s in local if s["name"] in LOCAL]
            if mine:  # a suppression alone has no local store
                await self.members.report(work.id, "FAILED" if any(
                    s["status"] == "FAILED" for s in mine) else "FINISHED", mine)
            hosts_failed = await self.members.wait(work.id)
        final = "FINISHED" if not failed and not hosts_failed else (
            "FAILED" if failed == len(work.stores) else "PARTIAL_SUCCESS")
        await asyncio.to_thread(reg.finish, work.id, final)
        log.info("regulation done", extra={"regulation": work.id, "status": final})

    async def _host_pending(self, members: Members) -> None:
        """Start this host's part of the regulations another pipeline runs."""
        try:
            pending = await members.pending()
        except Exception:
            log.warning("the shared regulations cannot be read now", exc_info=True)
            return
        for work in pending:
            if work.id not in self._hosting:
                task = asyncio.create_task(self._host(members, work))
                self._hosting[work.id] = task
                task.add_done_callback(functools.partial(self._unhost, work.id))

    def _unhost(self, regulation_id: str, task: asyncio.Task[None]) -> None:
        self._hosting.pop(regulation_id, None)
        if not task.cancelled() and task.exception() is not None:  # runs again at next poll
            log.warning("a host's part of a regulation stopped", exc_info=task.exception())

    async def _host(self, members: Members, work: Work) -> None:
        """Run this host's local stores for a regulation another pipeline runs; report."""
        from trackd.privacy.members import LOCAL

        subjects = Subjects(set(work.ids.get("user_ids", ())),
                            set(work.ids.get("anonymous_ids", ())),
                            None if work.sources is None else set(work.sources))
        names = [n for n in stores_of(work.type, **self.stores, scoped=work.sources is not None)
                 if n in LOCAL]
        done: list[dict[str, object]] = []
        for name in names:
            try:
                rows = await self._store(name, work, subjects)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("a regulation failed in one local store",
                              extra={"regulation": work.id, "store": name})
                done.append({"name": name, "status": "FAILED",
                             "error": f"{type(exc).__name__}: {exc}"[:500]})
                continue
            done.append({"name": name, "status": "FINISHED" if rows >= 0 else "FAILED",
                         "rows": abs(rows)})
        await members.report(work.id, "FAILED" if any(
            s["status"] == "FAILED" for s in done) else "FINISHED", done)

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
