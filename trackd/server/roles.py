"""`trackd serve --role`: which part of trackd a process runs, and what each needs.

- `all` (the default): the gateway workers, the pipeline and the admin API, on one machine.
- `gateway`: only the tracking API workers. They hold no state on the NATS log, so any number
  may run behind a load balancer; without a pipeline here there is no admin API either.
- `pipeline`: the stages that consume the log (warehouse, destinations, archive) and the admin
  API, no tracking port. Processes of one deployment share each stage's consumer.

The embedded SQLite log is files on one machine, read by that machine's pipeline: there only
`all` runs. A DuckDB warehouse is a file with one writer: on the NATS log, a process that runs
the pipeline with it holds a claim in a JetStream key-value bucket (renewed every few seconds,
gone CLAIM_TTL seconds after the process stops), so a second one refuses to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Literal

from trackd.errors import ConfigError
from trackd.log.choice import on_nats
from trackd.observability import get_logger
from trackd.settings import Settings

Role = Literal["all", "gateway", "pipeline"]
ROLES: tuple[Role, ...] = ("all", "gateway", "pipeline")
CLAIM_TTL = 10.0
CLAIM_KEY = "duckdb-warehouse"
log = get_logger("supervisor")


def check_role(settings: Settings, role: str) -> None:
    if role not in ROLES:
        raise ConfigError(f"--role: expected one of {', '.join(ROLES)}, got {role!r}")
    if role != "all" and not on_nats(settings):
        raise ConfigError(f"--role {role} needs the NATS log ([log] url): the embedded SQLite "
                          "log is files one machine's gateway and pipeline share, so it runs "
                          "only with --role all")


def uses_duckdb(settings: Settings) -> bool:
    # `warehouse.url` names a PostgreSQL warehouse where that backend exists; none: DuckDB.
    return settings.warehouse.enabled and not getattr(settings.warehouse, "url", "")


Release = Callable[[], Awaitable[None]]


async def claim_warehouse(settings: Settings) -> Release | None:
    """On the NATS log with a DuckDB warehouse: this process's claim to run the pipeline, or a
    ConfigError naming the process that holds it. Returns how to release the claim."""
    if not on_nats(settings) or not uses_duckdb(settings):
        return None
    import nats  # here: nats-py only where the NATS log is used
    import nats.errors
    import nats.js.errors
    from nats.js import api

    me = f"{socket.gethostname()}:{settings.data_dir}".encode()
    servers = [s.strip() for s in settings.log.url.split(",") if s.strip()]
    try:
        nc = await nats.connect(servers, name="trackd-claim", connect_timeout=2,
                                max_reconnect_attempts=-1, allow_reconnect=True)
    except Exception as exc:
        raise ConfigError(f"cannot reach NATS at {settings.log.url} to check that no other "
                          f"pipeline process writes the DuckDB warehouse: "
                          f"{exc or type(exc).__name__}") from None
    try:
        js = nc.jetstream(timeout=5)
        kv = await js.create_key_value(api.KeyValueConfig(
            bucket=f"{settings.log.stream}_pipeline", ttl=CLAIM_TTL,
            replicas=settings.log.replicas))
        try:
            await kv.create(CLAIM_KEY, me)
        except nats.js.errors.KeyWrongLastSequenceError:
            entry = await kv.get(CLAIM_KEY)
            holder = (entry.value or b"").decode()
            if entry.value != me:
                raise ConfigError(
                    f"another pipeline process ({holder}) runs on this NATS log with a DuckDB "
                    "warehouse, which has one writer: run one pipeline process, or use the "
                    "PostgreSQL warehouse ([warehouse] url) for several") from None
            await kv.put(CLAIM_KEY, me)  # this data dir's previous run: take it over
    except ConfigError:
        await nc.close()
        raise
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
        await nc.close()
        raise ConfigError(f"cannot check on NATS that no other pipeline process writes the "
                          f"DuckDB warehouse: {exc or type(exc).__name__}") from None

    async def renew() -> None:
        while True:
            await asyncio.sleep(CLAIM_TTL / 4)
            try:
                await kv.put(CLAIM_KEY, me)
            except Exception as exc:  # NATS away: renewed when it is back
                log.warning("could not renew the warehouse claim", extra={"error": str(exc)})

    task = asyncio.create_task(renew())

    async def release() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(Exception):
            await kv.delete(CLAIM_KEY)
        await nc.close()

    return release
