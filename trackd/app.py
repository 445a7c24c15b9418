"""The composition root: the one place that knows every stage and wires them together.

- `build_gateway(settings, index, run_dir)`: one gateway worker (tracking API -> the log: its
  SQLite shard, or the NATS JetStream stream with `[log] url`).
- `Pipeline(settings, run_dir)`: the pipeline process: every stage that consumes the log
  (warehouse, destinations, archive), log trimming, and the admin API (an ASGI app served on
  `<run_dir>/admin.sock`; gateway workers proxy `/api/*` to it). It reads the log through the
  seam of `trackd.log.protocol` (`source`); `reader` is the SQLite log's reader, None on NATS.
Stages are started in pipeline order and stopped in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trackd.errors import LogError
from trackd.gateway.app import Gateway
from trackd.gateway.ingest import Ingestor
from trackd.log import shard
from trackd.log.choice import log_dir, on_nats, open_source
from trackd.log.protocol import LogProducer
from trackd.log.reader import LogReader
from trackd.log.sqlite import SqliteProducer
from trackd.log.writer import LogWriter
from trackd.observability import SIZE_BUCKETS, Registry, get_logger, read_snapshots, render
from trackd.plans.plans import SourcePlans
from trackd.privacy.gate import PrivacyGate
from trackd.server.proxy import AdminProxy
from trackd.settings import Settings
from trackd.types import Lookup, QueryEngine, Stage

if TYPE_CHECKING:
    from trackd.console.service import Console

SNAPSHOT_INTERVAL = 2.0
log = get_logger("app")


@dataclass
class GatewayParts:
    gateway: Gateway
    producer: LogProducer
    metrics: Registry


def _sqlite_producer(settings: Settings, index: int, metrics: Registry
                     ) -> tuple[LogProducer, Callable[[], str | None]]:
    """This worker's shard of the embedded log, and what makes the worker unhealthy."""
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

    def unhealthy() -> str | None:
        if writer.last_error is not None:
            return f"the log cannot be written (disk full?): {writer.last_error}"
        if writer.pending_bytes >= settings.server.max_pending_mb * 1024 * 1024:
            return "the log is full: too many messages waiting for the disk"
        return None

    return SqliteProducer(writer), unhealthy


def _nats_producer(settings: Settings) -> tuple[LogProducer, Callable[[], str | None]]:
    """The NATS log: the gateway holds no state; unhealthy while NATS is unreachable."""
    from trackd.log.jetstream import JetStreamLog

    producer = JetStreamLog(settings.log)

    def unhealthy() -> str | None:
        if not producer.healthy:
            return f"the NATS log cannot be written: {producer.last_error or 'not connected'}"
        return None

    return producer, unhealthy


def build_gateway(settings: Settings, index: int, run_dir: Path, *,
                  admin: bool = True) -> GatewayParts:
    metrics = Registry()
    producer, unhealthy = (_nats_producer(settings) if on_nats(settings)
                           else _sqlite_producer(settings, index, metrics))
    plans = SourcePlans(settings.sources).load()
    name = f"gateway-{index}"
    shared = None
    if on_nats(settings):  # keys and suppression list shared by every host, in NATS
        from trackd.privacy.shared import SharedState

        shared = SharedState(settings.log)
    privacy = PrivacyGate(settings.sources, settings.data_dir, run_dir / "privacy" / name,
                          shared=shared)
    ingestor = Ingestor(settings.sources, producer, metrics, workers=settings.server.workers,
                        plans=plans.by_source, privacy=privacy)
    proxy = AdminProxy(str(run_dir / "admin.sock"))
    snapshots = run_dir / "metrics"
    tasks: list[asyncio.Task[None]] = []

    def render_metrics() -> str:
        return render([metrics.snapshot(), *read_snapshots(snapshots, exclude=name)])

    async def dump_forever() -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_INTERVAL)
            await asyncio.to_thread(metrics.dump, snapshots / f"{name}.json")

    async def startup() -> None:
        await producer.start()
        tasks.append(asyncio.create_task(dump_forever()))
        await privacy.start()
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
        await privacy.stop()
        await producer.close()
        metrics.dump(snapshots / f"{name}.json")
        await proxy.aclose()

    def not_ready() -> str | None:
        if not privacy.loaded:
            return "the shared privacy settings cannot be read yet"
        return unhealthy()

    gateway = Gateway(ingestor, metrics, ready=lambda: producer.healthy and privacy.loaded,
                      render_metrics=render_metrics, cors_origins=settings.server.cors_origins,
                      trusted_proxies=settings.server.trusted_proxies,
                      # None: the admin API has its own listener, or no pipeline runs here
                      admin=None if settings.server.admin_host or not admin else proxy,
                      public_url=settings.server.public_url,
                      unhealthy=not_ready, lifespan=(startup, shutdown))
    proxy.stopping = lambda: gateway.draining
    return GatewayParts(gateway, producer, metrics)


class Pipeline:
    """Everything that runs in the supervisor process."""

    def __init__(self, settings: Settings, run_dir: Path) -> None:
        self.settings = settings
        self.run_dir = run_dir
        self.metrics = Registry()
        self.source, self.reader = open_source(settings)
        self.stages: list[Stage] = []
        self.lookups: dict[str, Lookup] = {}
        self.query_engine: QueryEngine | None = None
        self._erasure: Any = None  # the warehouse's side of a privacy deletion
        self.extra_routes: list[Any] = []
        self.public_paths: list[str] = []  # extra routes open without the admin token
        self._tasks: list[asyncio.Task[None]] = []
        self.state = "starting"  # then "running", "stopping": what /readyz reports
        from trackd.admin.health import Health  # here: gateway workers never need it

        self.health = Health(self.reader, settings.data_dir)
        self.log_lag: dict[str, int] = {}  # NATS: per consumer, refreshed with the metrics
        self._wire()
        self.console: Console | None = None
        if settings.server.console:
            from trackd.console.service import Console

            self.console = Console(self)
            self.extra_routes.extend(self.console.routes())
            self._privacy.forgetters.append(self.console.forget)
        from trackd.admin.api import build_admin  # here: gateway workers never need it

        self.admin = build_admin(self)

    def _wire(self) -> None:
        """Construct each stage with its dependencies. Order = pipeline order."""
        size = self.metrics.gauge("trackd_log_bytes", "Size of the log files on disk.")
        lag = self.metrics.gauge("trackd_log_consumer_lag",
                                 "Records a consumer has not committed yet.", ("consumer",))
        directory = log_dir(self.settings)
        reader = self.reader

        def collect() -> None:
            if reader is None:  # NATS: what `_refresh_lag` last found
                for consumer, behind in self.log_lag.items():
                    lag.set((consumer,), float(behind))
                return
            size.set((), float(sum(p.stat().st_size for p in directory.glob("*.db*")
                                   if p.exists())))
            for consumer in reader.consumers():
                lag.set((consumer,), float(reader.lag(consumer)))

        self.metrics.on_collect(collect)

        log_ = self.reader or self.source
        if self.settings.warehouse.enabled:
            # Imported here: gateway workers import this module and never need DuckDB.
            from trackd.server.priority import lower_thread_priority
            from trackd.warehouse.backend import server_backend, server_erasure
            from trackd.warehouse.loader import WarehouseLoader, utcnow
            from trackd.warehouse.lookup import WarehouseLookup
            from trackd.warehouse.profiles import profile_routes
            from trackd.warehouse.query import UNWIND_WAIT

            wh = self.settings.warehouse
            store, engine = server_backend(self.settings, lower_thread_priority)
            loader = WarehouseLoader(
                wh, store, log_, self.metrics, thread_setup=lower_thread_priority,
                make_room=lambda: engine.interrupt_all("because the loader needed the memory",
                                                       wait=UNWIND_WAIT))
            self.stages.append(loader)
            self._erasure = server_erasure(self.settings, store, loader, engine)
            self.lookups["warehouse"] = WarehouseLookup(
                store, [source.name for source in self.settings.sources])
            self.query_engine = engine
            self.extra_routes.extend(
                profile_routes(store, self.settings.server.admin_token, utcnow))

        # Imported here too: gateway workers never need the destination or archive code.
        from trackd.archive import build_archive
        from trackd.destinations import build_destinations

        destinations, deliveries = build_destinations(self.settings, log_, self.metrics,
                                                      self.settings.data_dir)
        self.stages.extend(destinations)
        self.lookups["destinations"] = deliveries
        archive = build_archive(self.settings, log_, self.metrics, self.settings.data_dir)
        if archive is not None:
            self.stages.append(archive)
        self._wire_privacy()
        if self.settings.server.ephemeral and self.reader is not None:  # for an app's tests
            from trackd.testing.endpoints import TEST_PATHS, test_routes

            self.extra_routes.extend(test_routes(self.reader))
            self.public_paths.extend(TEST_PATHS)

    def _wire_privacy(self) -> None:
        """Regulations (deletion, suppression) over every store wired above: not a log
        consumer, so not in `stages`; it starts after them and stops before them."""
        from trackd.privacy.wiring import build_privacy

        privacy, routes = build_privacy(self.settings, self.run_dir, self._erasure)
        self._privacy = privacy
        self.extra_routes.extend(routes)

    async def _forget_removed_destinations(self) -> None:
        configured = {f"destination:{d.name}" for d in self.settings.destinations}
        for consumer in await self.source.consumers():
            if consumer.startswith("destination:") and consumer not in configured:
                # Removed from the config: stop holding back trimming for it.
                log.warning("forgetting the log position of a removed destination",
                            extra={"consumer": consumer})
                await self.source.unregister(consumer)

    async def start(self) -> None:
        await self.source.start()
        try:
            await self._forget_removed_destinations()
        except LogError as exc:  # NATS not there yet: stages keep trying to reach it
            log.warning("the log cannot be reached yet", extra={"error": str(exc)})
        for stage in self.stages:
            await stage.start()
            log.debug("stage started", extra={"stage": stage.name})
        await self._privacy.start()
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
        await self._privacy.stop()
        for stage in reversed(self.stages):
            try:
                await stage.stop()
            except Exception:
                log.exception("stage failed to stop cleanly", extra={"stage": stage.name})
        self.metrics.dump(self.run_dir / "metrics" / "pipeline.json")
        self.health.close()
        await self.source.close()
        log.info("pipeline stopped")

    def render_metrics(self) -> str:
        return render([self.metrics.snapshot(),
                       *read_snapshots(self.run_dir / "metrics", exclude="pipeline")])

    async def _trim_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.log.trim_interval)
            with contextlib.suppress(Exception):
                await self.source.trim()

    async def _dump_forever(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_INTERVAL)
            if self.reader is None:
                await self._refresh_lag()
            await asyncio.to_thread(self.metrics.dump, self.run_dir / "metrics" / "pipeline.json")

    async def _refresh_lag(self) -> None:
        """The NATS consumers' lag, for the metrics and /readyz (an API call each)."""
        from trackd.log.jetstream import JetStreamLog

        if not isinstance(self.source, JetStreamLog):
            return
        with contextlib.suppress(LogError):  # unreachable: the last figures stay
            behind = {name: await self.source.behind(name)
                      for name in await self.source.consumers()}
            self.log_lag = {name: count for name, (count, _) in behind.items()}
            self.health.remote_lag = behind


def offline_query_engine(settings: Settings) -> QueryEngine:
    """The warehouse opened read-only, for commands run while no server is running."""
    from trackd.errors import ConfigError
    from trackd.warehouse.backend import offline_engine

    if not settings.warehouse.enabled:
        raise ConfigError("the warehouse is disabled (warehouse.enabled = false)")
    return offline_engine(settings)


def offline_where_is(settings: Settings, message_id: str) -> dict[str, Any]:
    """`where_is` from the files, for commands run while no server is running."""
    from trackd.admin.lookup import where_is
    from trackd.destinations import open_lookup
    from trackd.warehouse.backend import offline_store
    from trackd.warehouse.lookup import WarehouseLookup

    reader = LogReader(log_dir(settings))
    deliveries = open_lookup(settings, reader, settings.data_dir)
    lookups: dict[str, Lookup] = {"destinations": deliveries}
    store = offline_store(settings) if settings.warehouse.enabled else None
    if store is not None:
        lookups["warehouse"] = WarehouseLookup(store, [s.name for s in settings.sources])
    try:
        return where_is(message_id, reader, lookups)
    finally:
        deliveries.close()
        reader.close()
        if store is not None:
            store.close()
