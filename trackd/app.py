"""The composition root: the one place that knows every stage and wires them together.

- `build_gateway(settings, index, run_dir)`: one gateway worker (tracking API -> its log shard).
- `Pipeline(settings, run_dir)`: the pipeline process: every stage that consumes the log
  (warehouse, destinations, archive), log trimming, and the admin API (an ASGI app served on
  `<run_dir>/admin.sock`; gateway workers proxy `/api/*` to it).
Stages are started in pipeline order and stopped in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trackd.admin.api import build_admin
from trackd.admin.health import Health
from trackd.gateway.app import Gateway
from trackd.gateway.ingest import Ingestor
from trackd.log import shard
from trackd.log.reader import LogReader
from trackd.log.writer import LogWriter
from trackd.observability import SIZE_BUCKETS, Registry, get_logger, read_snapshots, render
from trackd.plans.plans import SourcePlans
from trackd.server.proxy import AdminProxy
from trackd.settings import Settings
from trackd.types import Lookup, QueryEngine, Stage

if TYPE_CHECKING:
    from trackd.console.service import Console

SNAPSHOT_INTERVAL = 2.0
log = get_logger("app")


def log_dir(settings: Settings) -> Path:
    return settings.data_dir / "log"


@dataclass
class GatewayParts:
    gateway: Gateway
    writer: LogWriter
    metrics: Registry


def build_gateway(settings: Settings, index: int, run_dir: Path) -> GatewayParts:
    metrics = Registry()
    commit_seconds = metrics.histogram("trackd_log_commit_seconds",
                                       "Time of one group commit (write + fsync).")
    per_commit = metrics.histogram("trackd_log_messages_per_commit",
                                   "Messages stored by one group commit.", SIZE_BUCKETS)

    def on_commit(seconds: float, count: int) -> None:
        commit_seconds.observe(seconds)
        per_commit.observe(count)

    directory = log_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    writer = LogWriter(shard.shard_path(directory, f"gw{index}"),
                       max_pending_bytes=settings.server.max_pending_mb * 1024 * 1024,
                       on_commit=on_commit, fsync=not settings.server.ephemeral)
    plans = SourcePlans(settings.sources).load()
    ingestor = Ingestor(settings.sources, writer, metrics, workers=settings.server.workers,
                        plans=plans.by_source)
    proxy = AdminProxy(str(run_dir / "admin.sock"))
    name = f"gateway-{index}"
    snapshots = run_dir / "metrics"
    tasks: list[asyncio.Task[None]] = []

    def render_metrics() -> str:
        return render([metrics.snapshot(), *read_snapshots(snapshots, exclude=name)])

    async def dump_forever() -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_INTERVAL)
            await asyncio.to_thread(metrics.dump, snapshots / f"{name}.json")

    async def startup() -> None:
        writer.start(asyncio.get_running_loop())
        tasks.append(asyncio.create_task(dump_forever()))
        if plans.paths:  # SIGHUP (forwarded by the supervisor) reloads the tracking plans
            status = run_dir / "plans" / f"{name}.json"
            await asyncio.to_thread(plans.write_status, status)

            def reload() -> None:
                plans.reload()
                plans.write_status(status)

            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
        (run_dir / f"ready-{index}").touch()

    async def shutdown() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.to_thread(writer.close)
        metrics.dump(snapshots / f"{name}.json")
        await proxy.aclose()

    def unhealthy() -> str | None:
        if writer.last_error is not None:
            return f"the log cannot be written (disk full?): {writer.last_error}"
        if writer.pending_bytes >= settings.server.max_pending_mb * 1024 * 1024:
            return "the log is full: too many messages waiting for the disk"
        return None

    gateway = Gateway(ingestor, metrics, ready=lambda: writer.healthy,
                      render_metrics=render_metrics, cors_origins=settings.server.cors_origins,
                      trusted_proxies=settings.server.trusted_proxies,
                      admin=None if settings.server.admin_host else proxy,  # own listener
                      public_url=settings.server.public_url,
                      unhealthy=unhealthy, lifespan=(startup, shutdown))
    proxy.stopping = lambda: gateway.draining
    return GatewayParts(gateway, writer, metrics)


class Pipeline:
    """Everything that runs in the supervisor process."""

    def __init__(self, settings: Settings, run_dir: Path) -> None:
        self.settings = settings
        self.run_dir = run_dir
        self.metrics = Registry()
        self.reader = LogReader(log_dir(settings))
        self.stages: list[Stage] = []
        self.lookups: dict[str, Lookup] = {}
        self.query_engine: QueryEngine | None = None
        self.extra_routes: list[Any] = []
        self.public_paths: list[str] = []  # extra routes open without the admin token
        self._tasks: list[asyncio.Task[None]] = []
        self.state = "starting"  # then "running", "stopping": what /readyz reports
        self.health = Health(self.reader, settings.data_dir)
        self._wire()
        self.console: Console | None = None
        if settings.server.console:
            from trackd.console.service import Console

            self.console = Console(self)
            self.extra_routes.extend(self.console.routes())
        self.admin = build_admin(self)

    def _wire(self) -> None:
        """Construct each stage with its dependencies. Order = pipeline order."""
        size = self.metrics.gauge("trackd_log_bytes", "Size of the log files on disk.")
        lag = self.metrics.gauge("trackd_log_consumer_lag",
                                 "Records a consumer has not committed yet.", ("consumer",))
        directory = log_dir(self.settings)

        def collect() -> None:
            size.set((), float(sum(p.stat().st_size for p in directory.glob("*.db*")
                                   if p.exists())))
            for consumer in self.reader.consumers():
                lag.set((consumer,), float(self.reader.lag(consumer)))

        self.metrics.on_collect(collect)

        if self.settings.warehouse.enabled:
            # Imported here: gateway workers import this module and never need DuckDB.
            from trackd.server.priority import lower_thread_priority
            from trackd.warehouse.db import Database, warehouse_path
            from trackd.warehouse.loader import WarehouseLoader, utcnow
            from trackd.warehouse.lookup import WarehouseLookup
            from trackd.warehouse.profiles import profile_routes
            from trackd.warehouse.query import UNWIND_WAIT, WarehouseQueryEngine

            wh = self.settings.warehouse
            database = Database(warehouse_path(self.settings.data_dir),
                                memory_limit_mb=wh.memory_limit_mb, threads=wh.threads,
                                temp_mb=wh.query_temp_mb)
            engine = WarehouseQueryEngine(
                database, timeout=wh.query_timeout, max_rows=wh.query_max_rows,
                max_bytes=int(wh.query_max_mb * 1024 * 1024), workers=wh.query_workers,
                thread_setup=lower_thread_priority)
            self.stages.append(WarehouseLoader(
                wh, database, self.reader, self.metrics, thread_setup=lower_thread_priority,
                make_room=lambda: engine.interrupt_all("because the loader needed the memory",
                                                       wait=UNWIND_WAIT)))
            self.lookups["warehouse"] = WarehouseLookup(
                database, [source.name for source in self.settings.sources])
            self.query_engine = engine
            self.extra_routes.extend(
                profile_routes(database, self.settings.server.admin_token, utcnow))

        # Imported here too: gateway workers never need the destination or archive code.
        from trackd.archive import build_archive
        from trackd.destinations import build_destinations

        destinations, deliveries = build_destinations(self.settings, self.reader, self.metrics,
                                                      self.settings.data_dir)
        self.stages.extend(destinations)
        self.lookups["destinations"] = deliveries
        configured = {f"destination:{d.name}" for d in self.settings.destinations}
        for consumer in self.reader.consumers():
            if consumer.startswith("destination:") and consumer not in configured:
                # Removed from the config: stop holding back trimming for it.
                log.warning("forgetting the log position of a removed destination",
                            extra={"consumer": consumer})
                self.reader.unregister(consumer)
        archive = build_archive(self.settings, self.reader, self.metrics, self.settings.data_dir)
        if archive is not None:
            self.stages.append(archive)
        if self.settings.server.ephemeral:  # what arrived, for an app's tests
            from trackd.testing.endpoints import TEST_PATHS, test_routes

            self.extra_routes.extend(test_routes(self.reader))
            self.public_paths.extend(TEST_PATHS)

    async def start(self) -> None:
        for stage in self.stages:
            await stage.start()
            log.debug("stage started", extra={"stage": stage.name})
        log.info("pipeline started", extra={"stages": ",".join(s.name for s in self.stages)})
        self._tasks.append(asyncio.create_task(self._trim_forever()))
        self._tasks.append(asyncio.create_task(self._dump_forever()))
        if self.console is not None:
            await self.console.start()
        self.state = "running"

    def stopping(self) -> None:
        """Shutdown has begun: running admin queries end now rather than at query_timeout, so
        that neither their requests nor the warehouse hold the server up."""
        self.state = "stopping"
        if self.query_engine is not None:
            self.query_engine.interrupt_all("because the server is stopping")

    async def stop(self) -> None:
        self.stopping()
        for task in self._tasks:
            task.cancel()
        if self.console is not None:
            await self.console.stop()
        for stage in reversed(self.stages):
            try:
                await stage.stop()
            except Exception:
                log.exception("stage failed to stop cleanly", extra={"stage": stage.name})
        self.metrics.dump(self.run_dir / "metrics" / "pipeline.json")
        self.health.close()
        self.reader.close()
        log.info("pipeline stopped")

    def render_metrics(self) -> str:
        return render([self.metrics.snapshot(),
                       *read_snapshots(self.run_dir / "metrics", exclude="pipeline")])

    async def _trim_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.log.trim_interval)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.reader.trim)

    async def _dump_forever(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_INTERVAL)
            await asyncio.to_thread(self.metrics.dump, self.run_dir / "metrics" / "pipeline.json")


def offline_query_engine(settings: Settings) -> QueryEngine:
    """The warehouse opened read-only, for commands run while no server is running."""
    from trackd.errors import ConfigError
    from trackd.warehouse.db import Database, warehouse_path
    from trackd.warehouse.query import WarehouseQueryEngine

    if not settings.warehouse.enabled:
        raise ConfigError("the warehouse is disabled (warehouse.enabled = false)")
    wh = settings.warehouse
    database = Database(warehouse_path(settings.data_dir), read_only=True,
                        temp_mb=wh.query_temp_mb)
    database.open()
    return WarehouseQueryEngine(database, timeout=wh.query_timeout, max_rows=wh.query_max_rows,
                                max_bytes=int(wh.query_max_mb * 1024 * 1024))


def offline_where_is(settings: Settings, message_id: str) -> dict[str, Any]:
    """`where_is` from the files, for commands run while no server is running."""
    from trackd.admin.lookup import where_is
    from trackd.destinations import open_lookup
    from trackd.warehouse.db import Database, warehouse_path
    from trackd.warehouse.lookup import WarehouseLookup

    reader = LogReader(log_dir(settings))
    deliveries = open_lookup(settings, reader, settings.data_dir)
    lookups: dict[str, Lookup] = {"destinations": deliveries}
    database = Database(warehouse_path(settings.data_dir), read_only=True)
    if settings.warehouse.enabled and database.path.exists():
        database.open()
        lookups["warehouse"] = WarehouseLookup(database, [s.name for s in settings.sources])
    try:
        return where_is(message_id, reader, lookups)
    finally:
        deliveries.close()
        reader.close()
        database.close()
