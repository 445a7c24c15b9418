"""The privacy stage and its routes, built for the pipeline from the settings."""

from __future__ import annotations

import functools
from pathlib import Path

from starlette.routing import Route

from trackd.privacy.api import regulation_routes
from trackd.privacy.service import PrivacyService
from trackd.privacy.stores import WarehouseSide
from trackd.settings import Settings


def build_privacy(settings: Settings, run_dir: Path, warehouse: WarehouseSide | None
                  ) -> tuple[PrivacyService, list[Route]]:
    from trackd.archive import archive_dir
    from trackd.archive.erase import erase_archive
    from trackd.destinations import ledger_dir
    from trackd.destinations.ledger import ledger_path

    data_dir = settings.data_dir
    shared, log_erasure = None, None
    if settings.log.url:  # NATS: state shared by every process, the stream's erasure
        from trackd.log.jetstream_erase import JetStreamErasure
        from trackd.privacy.shared import SharedState

        shared = SharedState(settings.log)
        log_erasure = JetStreamErasure(settings.log.stream, shared.client)
    archive = functools.partial(erase_archive, archive_dir(data_dir)) \
        if settings.archive.enabled else None
    service = PrivacyService(
        data_dir, run_dir, data_dir / "log", workers=settings.server.workers,
        rewrite_delay=settings.privacy.rewrite_delay, warehouse=warehouse, archive=archive,
        archive_flush=settings.archive.flush_interval if archive is not None else 0.0,
        ledger_dir=ledger_dir(data_dir),
        notify={d.name: (ledger_path(ledger_dir(data_dir), d.name), list(d.sources))
                for d in settings.destinations if d.deletions},
        retention={s.name: s.retention_days for s in settings.sources},
        retention_interval=settings.privacy.retention_interval,
        archive_root=archive_dir(data_dir) if archive is not None else None,
        log_erasure=log_erasure, shared=shared)
    return service, regulation_routes(service, [s.name for s in settings.sources])
