"""The pipeline stage that runs regulations in the background, store by store.

A regulation is recorded first (`Regulations.create`, INITIALIZED) and answered at once; this
stage then runs it: RUNNING, then each of its stores in order (`suppression`, `log`,
`warehouse`, `archive`, `memory`, `ledgers`, `destinations`, `files`: what each does is
`steps`), each with its own status.

On the NATS log every pipeline host runs the local stores (archive, memory, ledgers, files)
on its own data dir, and the regulation ends once each has reported (`trackd.privacy.members`).

A regulation is FINISHED when every store is, PARTIAL_SUCCESS when some failed; its ids are
then forgotten. After a crash, the unfinished regulations are run again from the start (each
step is idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from trackd.observability import get_logger
from trackd.privacy.erase import SqliteLogErasure
from trackd.privacy.keys import Keys, load_keys
from trackd.privacy.regulations import Regulations, Work, stores_of
from trackd.privacy.retention import retention_forever
from trackd.privacy.steps import StoreSteps
from trackd.privacy.stores import ArchiveEraser, LogErasure, RewriteBatcher, WarehouseSide
from trackd.privacy.subjects import Subjects

if TYPE_CHECKING:  # nats-py is imported only where the log is NATS
    from trackd.privacy.members import Members
    from trackd.privacy.regulations_kv import KvRegulations
    from trackd.privacy.shared import SharedState

log = get_logger("privacy")


class PrivacyService(StoreSteps):
    """Runs regulations: the admin API records one and `wake`s the runner (each store's step:
    `StoreSteps`)."""

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
