"""Settings as documented data: frozen dataclasses whose fields carry their help text.

Read once at the edge (the CLI) from `trackd.toml` and `TRACKD_<SECTION>_<KEY>` environment
variables, then passed down. `SETTINGS` lists (name, default, help) for every key;
tests/test_docs.py checks that docs/settings.md documents each one.

Sources and destinations are arrays of tables in the file; from the environment they are
`TRACKD_SOURCE_<NAME>_<KEY>` and `TRACKD_DESTINATION_<NAME>_<KEY>` (NAME upper-cased, `-` as `_`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import tomllib
import typing
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trackd.errors import ConfigError
from trackd.observability import LOG_LEVELS
from trackd.privacy.policy import check_source

_SLUG = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

# The source generated when none is configured, also its warehouse schema: `app` needs no
# quoting in DuckDB or PostgreSQL and is no schema either has built in. Data dirs made before
# it keep the name they were given, `default` (an SQL keyword: quote it, "default".tracks).
DEFAULT_SOURCE = "app"
LEGACY_DEFAULT_SOURCE = "default"


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass(frozen=True)
class ServerSettings:
    host: str = _f("127.0.0.1", "Address the HTTP server listens on.")
    port: int = _f(8088, "TCP port of the HTTP server (0 picks a free one).")
    workers: int = _f(1, "Gateway processes; one per core uses every core.")
    admin_token: str = _f("", "Bearer token for /api/* and the Profile API; generated when empty.")
    data_dir: str = _f("./trackd-data", "Where the log, warehouse, archive and state live.")
    max_pending_mb: int = _f(64, "Bytes waiting for a log commit per worker before 503.")
    cors_origins: list[str] = _f(["*"], "Origins allowed by CORS on the tracking paths.")
    trusted_proxies: list[str] = _f([], "Peers whose X-Forwarded-For sets context.ip.")
    shutdown_timeout: float = _f(10.0, "Seconds to finish in-flight work on SIGTERM.")
    drain_seconds: float = _f(0.5, "Seconds after SIGTERM during which /readyz and new "
                              "tracking requests get 503 before the port closes.")
    log_level: str = _f("info", "Server log: debug, info, warning or error (info: a line "
                        "per notable event).")
    max_header_bytes: int = _f(32768, "Most bytes of a request's line and headers (431 beyond).")
    max_headers: int = _f(100, "Most header lines in one request (431 beyond).")
    header_timeout: float = _f(10.0, "Seconds for a request's line and headers to arrive.")
    idle_timeout: float = _f(5.0, "Seconds a connection may stay open with no request in "
                             "progress (new, or kept alive between requests).")
    max_connections: int = _f(4096, "Open connections per worker; requests on any beyond "
                              "get 503 with Retry-After.")
    public_url: str = _f("", "URL clients reach trackd at (https://track.example.com); sets "
                         "apiHost in the analytics.js settings instead of the Host header.")
    admin_host: str = _f("", "Address of a separate admin listener (empty: none; the admin "
                         "API, console and Profile API are then served on the main port).")
    admin_port: int = _f(8089, "TCP port of the admin listener, when admin_host is set "
                         "(0 picks a free one).")
    admin_auth_failures: int = _f(10, "Failed admin authentications allowed per client "
                                  "address per minute; 429 beyond.")
    console: bool = _f(True, "Serve the web console under /console/ (log in with the admin "
                       "token).")
    ephemeral: bool = _f(False, "Set by `trackd serve --ephemeral`: throwaway data, no fsync, "
                         "test endpoints.")


@dataclass(frozen=True)
class SourceSettings:
    name: str = _f(DEFAULT_SOURCE, "Slug of the source; also its warehouse schema name.")
    write_keys: list[str] = _f([], "Write keys that send to this source.")
    rate_limit_per_second: float = _f(0.0, "Messages per second allowed (0: no limit).")
    tracking_plan: str = _f("", "YAML tracking plan checked on every message (path relative "
                            "to the config file; empty: none).")
    ip: str = _f("keep", "context.ip as stored: keep, truncate (IPv4 /24, IPv6 /48) or drop.")
    pii: list[dict[str, str]] = _f([], "Fields hashed (keyed, stable) or dropped before the "
                                   "log: [{path = \"context.traits.email\", action = \"hash\"}].")
    retention_days: float = _f(0.0, "Warehouse rows, archive files and quarantine older than "
                               "this are deleted daily (0: kept).")


@dataclass(frozen=True)
class WarehouseSettings:
    enabled: bool = _f(True, "Load the log into <data_dir>/warehouse.duckdb.")
    url: str = _f("", "PostgreSQL warehouse (postgresql://user@host:5432/db); empty: the "
                  "embedded <data_dir>/warehouse.duckdb.")
    query_url: str = _f("", "PostgreSQL warehouse: the login admin queries use (a role with "
                        "SELECT only); empty: url.")
    dedup_window_days: float = _f(7.0, "How long a messageId is remembered for dedup.")
    batch_rows: int = _f(20000, "Most records loaded in one warehouse transaction.")
    poll_interval: float = _f(0.2, "Seconds between looks at the log when idle.")
    memory_limit_mb: int = _f(512, "Memory DuckDB may use in the server (0: 80 % of RAM).")
    threads: int = _f(1, "DuckDB threads in the server (0: one per core); 1 leaves the "
                      "other cores to the gateway.")
    max_columns_per_table: int = _f(1000, "Columns a table may get; later properties are "
                                    "kept in the row's _overflow JSON.")
    max_tables_per_source: int = _f(1000, "Event tables a source may get; later events are kept "
                                    "in tracks (properties in _overflow).")
    query_workers: int = _f(2, "Admin SQL queries run at once (their own threads); more wait.")
    query_timeout: float = _f(60.0, "Seconds before an admin SQL query is interrupted.")
    query_max_rows: int = _f(10000, "Most rows a query returns (the answer says truncated).")
    query_max_mb: float = _f(16.0, "Most MB of encoded rows a query returns (then truncated).")
    query_temp_mb: int = _f(1024, "Most MB of spill files (<data_dir>/tmp) DuckDB may write.")


@dataclass(frozen=True)
class LogSettings:
    trim_interval: float = _f(60.0, "Seconds between trims of records every consumer passed.")
    url: str = _f("", "NATS servers of the NATS JetStream log, comma-separated "
                  "(nats://host:4222,...); empty: the embedded SQLite log.")
    stream: str = _f("trackd", "NATS log: JetStream stream name (letters, digits, - and _).")
    replicas: int = _f(1, "NATS log: copies of the stream (1-5; 3 survives one server down).")
    duplicate_window_s: float = _f(120.0, "NATS log: seconds a messageId is remembered to "
                                   "store a retried message once.")
    max_mb: int = _f(0, "NATS log: stream size bound in MiB; when full, 503 (0: no bound).")
    ack_wait_s: float = _f(30.0, "NATS log: seconds before a record read and not acknowledged "
                           "is delivered again.")
    max_ack_pending: int = _f(20000, "NATS log: records a consumer may hold unacknowledged.")


@dataclass(frozen=True)
class ArchiveSettings:
    enabled: bool = _f(True, "Keep every accepted message as Parquet under <data_dir>/archive.")
    retention_days: float = _f(365.0, "Archive partitions older than this are deleted.")
    flush_interval: float = _f(5.0, "Seconds between archive files when traffic is low.")
    flush_rows: int = _f(50000, "Rows that close an archive file before flush_interval.")


@dataclass(frozen=True)
class DestinationSettings:
    name: str = _f("", "Name; matched case-sensitively against the integrations object.")
    type: str = _f("webhook", "webhook or segment.")
    url: str = _f("", "webhook: URL to POST to; segment: base URL of the API (…/v1/batch).")
    write_key: str = _f("", "segment: write key used at the receiving API.")
    sources: list[str] = _f([], "Sources routed here (empty: all).")
    headers: dict[str, str] = _f({}, "Extra HTTP headers sent with each request.")
    secret: str = _f("", "webhook: HMAC-SHA256 key; signature in X-Trackd-Signature.")
    timeout: float = _f(10.0, "Seconds before a request counts as failed.")
    batch_size: int = _f(1, "Messages per request (webhook: 1 sends a bare message).")
    linger: float = _f(0.2, "Seconds to wait to fill a batch.")
    max_attempts: int = _f(10, "Attempts before a message is dead-lettered.")
    max_age_hours: float = _f(24.0, "Age after which a failing message is dead-lettered.")
    backoff_min: float = _f(0.5, "First retry delay in seconds.")
    backoff_max: float = _f(300.0, "Longest retry delay in seconds.")
    consent_categories: list[str] = _f([], "Consent categories a message must grant.")
    concurrency: int = _f(4, "Requests in flight at once (a user's messages never overlap).")
    poll_interval: float = _f(0.2, "Seconds between looks at the log when idle.")
    ledger_retention_days: float = _f(7.0, "Delivered/skipped ledger rows kept this long.")
    deletions: bool = _f(False, "Send Segment's delete event for each subject of a "
                         "DELETE_ONLY or SUPPRESS_WITH_DELETE regulation.")


@dataclass(frozen=True)
class PrivacySettings:
    rewrite_delay: float = _f(30.0, "Seconds a warehouse deletion waits so that pending ones "
                              "share one rewrite of the DuckDB file (raise for big warehouses).")
    retention_interval: float = _f(86400.0, "Seconds between two runs of the sources' "
                                   "retention_days (the first runs a minute after start-up).")


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    sources: tuple[SourceSettings, ...] = ()
    warehouse: WarehouseSettings = field(default_factory=WarehouseSettings)
    log: LogSettings = field(default_factory=LogSettings)
    archive: ArchiveSettings = field(default_factory=ArchiveSettings)
    destinations: tuple[DestinationSettings, ...] = ()
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    generated: tuple[str, ...] = ()  # what was generated at start-up (for the banner)

    @property
    def data_dir(self) -> Path:
        return Path(self.server.data_dir)

    def source_for_key(self) -> dict[str, SourceSettings]:
        return {key: src for src in self.sources for key in src.write_keys}


_SECTIONS: dict[str, type[Any]] = {
    "server": ServerSettings, "warehouse": WarehouseSettings, "log": LogSettings,
    "archive": ArchiveSettings, "privacy": PrivacySettings,
}
_TABLES: dict[str, type[Any]] = {"sources": SourceSettings, "destinations": DestinationSettings}



def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


SETTINGS: tuple[tuple[str, Any, str], ...] = tuple(
    (f"{section}.{f.name}", _default(f), f.metadata["help"])
    for section, cls in {**_SECTIONS, **_TABLES}.items()
    for f in dataclasses.fields(cls)
)


def _cast(where: str, value: Any, hint: Any) -> Any:
    """Check/convert one value to the field's type; strings come from the environment."""
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "false", "0"):
            return value.lower() in ("true", "1")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int or hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, int | float) and (hint is float or isinstance(value, int)):
            return hint(value)
        if isinstance(value, str):
            try:
                return hint(value)
            except ValueError:
                pass
        kind = "an integer" if hint is int else "a number"
        raise ConfigError(f"{where}: expected {kind}, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if origin is list and typing.get_args(hint)[0] is not str:  # pii: a list of tables
        if isinstance(value, str):  # path=action,path=action
            value = [dict(zip(("path", "action"), (x.strip() for x in p.split("=", 1)),
                              strict=False)) for p in value.split(",") if p.strip()]
        if not isinstance(value, list) or not all(
                isinstance(v, dict) and all(isinstance(x, str) for x in v.values())
                for v in value):
            raise ConfigError(f"{where}: expected a list of tables of strings, got {value!r}")
        return [dict(v) for v in value]
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return list(value)
    if origin is dict:
        if isinstance(value, str):
            pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
            if not all(len(p) == 2 for p in pairs):
                raise ConfigError(f"{where}: expected k=v pairs, got {value!r}")
            value = {k.strip(): v.strip() for k, v in pairs}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"{where}: expected a table of strings, got {value!r}")
        return dict(value)
    raise ConfigError(f"{where}: unsupported setting type")  # pragma: no cover


def _build(cls: type[Any], where: str, raw: Mapping[str, Any],
           origins: Mapping[str, str] | None = None) -> Any:
    """`origins` names where a value came from when not the file (`--port`, an env var)."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting {unknown[0]!r}")
    named = origins or {}
    return cls(**{k: _cast(named.get(f"{where}.{k}", f"{where}.{k}"), v, hints[k])
                  for k, v in raw.items()})


def _env_tables(env: Mapping[str, str], prefix: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    # the longest key first: LEDGER_RETENTION_DAYS is not RETENTION_DAYS of "<name>_ledger"
    keys = sorted({f.name for cls in _TABLES.values() for f in dataclasses.fields(cls)},
                  key=len, reverse=True)
    for key, value in env.items():
        if key.startswith(prefix):
            rest = key[len(prefix):].lower()
            for field_name in keys:
                if rest.endswith("_" + field_name):
                    out.setdefault(rest[: -len(field_name) - 1], {})[field_name] = value
                    break
    return out


def load(config: Path | None, *, data_dir: str | None = None,
         overrides: Mapping[str, Any] | None = None,
         env: Mapping[str, str] | None = None) -> Settings:
    """Read settings: file, then environment, then explicit overrides (CLI flags)."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    if config is not None:
        try:
            raw = tomllib.loads(config.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {config}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{config}: not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - set(_SECTIONS) - set(_TABLES))
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}] in {config}")
    sections: dict[str, Any] = {}
    origins: dict[str, str] = {}  # setting -> the env var or flag that set it, for errors
    for section, cls in _SECTIONS.items():
        values = dict(raw.get(section, {}))
        if not isinstance(raw.get(section, {}), dict):
            raise ConfigError(f"[{section}] must be a table")
        for f in dataclasses.fields(cls):
            key = f"TRACKD_{section.upper()}_{f.name.upper()}"
            if key in env:
                values[f.name] = env[key]
                origins[f"{section}.{f.name}"] = key
        if section == "server":
            flags = {**(overrides or {}), **({} if data_dir is None else {"data_dir": data_dir})}
            values.update(flags)
            origins.update({f"server.{k}": "--" + k.replace("_", "-") for k in flags})
        sections[section] = _build(cls, section, values, origins)
    tables: dict[str, tuple[Any, ...]] = {}
    for name, cls in _TABLES.items():
        items = raw.get(name, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ConfigError(f"{name} must be an array of tables ([[{name}]])")
        by_name: dict[str, dict[str, Any]] = {}
        for i, item in enumerate(items):
            key = str(item.get("name", DEFAULT_SOURCE if name == "sources" else f"#{i}"))
            by_name[key] = dict(item)
        singular = name[:-1].upper()
        for env_name, values in _env_tables(env, f"TRACKD_{singular}_").items():
            entry = next((v for k, v in by_name.items() if k.replace("-", "_") == env_name), None)
            if entry is None:
                entry = by_name.setdefault(env_name, {"name": env_name})
            entry.update(values)
        built = tuple(_build(cls, f"{name}[{k}]", v) for k, v in by_name.items())
        tables[name] = built
    if config is not None:  # a plan's path is relative to the file that names it
        tables["sources"] = tuple(
            dataclasses.replace(src, tracking_plan=str(config.parent / src.tracking_plan))
            if src.tracking_plan else src for src in tables["sources"])
    settings = Settings(server=sections["server"], warehouse=sections["warehouse"],
                        log=sections["log"], archive=sections["archive"],
                        privacy=sections["privacy"],
                        sources=tables["sources"], destinations=tables["destinations"])
    try:
        _check(settings)
    except ConfigError as exc:
        setting, _, reason = str(exc).partition(": ")
        raise ConfigError(f"{origins.get(setting, setting)}: {reason}") from None
    return settings


def _check(settings: Settings) -> None:
    if settings.server.workers < 1:
        raise ConfigError("server.workers: must be at least 1")
    if not 0 <= settings.server.port <= 65535:
        raise ConfigError("server.port: must be between 0 and 65535")
    if settings.server.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"server.log_level: must be one of {', '.join(LOG_LEVELS)}, "
                          f"got {settings.server.log_level!r}")
    if settings.server.max_pending_mb < 0:
        raise ConfigError("server.max_pending_mb: must not be negative")
    _check_server(settings.server)
    positive = {"warehouse.batch_rows": settings.warehouse.batch_rows,
                "warehouse.poll_interval": settings.warehouse.poll_interval,
                "log.trim_interval": settings.log.trim_interval}
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}: must be more than 0")
    for key in ("max_columns_per_table", "max_tables_per_source", "query_workers",
                "query_max_rows", "query_temp_mb"):
        if getattr(settings.warehouse, key) < 1:
            raise ConfigError(f"warehouse.{key}: must be at least 1")
    for key in ("query_timeout", "query_max_mb"):
        if getattr(settings.warehouse, key) <= 0:
            raise ConfigError(f"warehouse.{key}: must be more than 0")
    if settings.warehouse.dedup_window_days < 0:
        raise ConfigError("warehouse.dedup_window_days: must not be negative")
    seen: dict[str, str] = {}
    for src in settings.sources:
        if not _SLUG.match(src.name):
            raise ConfigError(f"sources[{src.name}].name: must be a lowercase slug "
                              "(letters, digits, _; starting with a letter)")
        if not src.write_keys:
            raise ConfigError(f"sources[{src.name}].write_keys: at least one write key needed")
        for key in src.write_keys:
            if key in seen:
                raise ConfigError(f"write key {key[:4]}… is used by sources {seen[key]} "
                                  f"and {src.name}")
            seen[key] = src.name
        check_source(f"sources[{src.name}]", src.ip, src.pii, src.retention_days)
    names = [d.name for d in settings.destinations]
    for dest in settings.destinations:
        where = f"destinations[{dest.name}]"
        if not dest.name:
            raise ConfigError("destinations: every destination needs a name")
        if names.count(dest.name) > 1:
            raise ConfigError(f"{where}: duplicate destination name")
        if dest.type not in ("webhook", "segment"):
            raise ConfigError(f"{where}.type: must be webhook or segment, got {dest.type!r}")
        if not dest.url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.url: must be an http(s) URL")
        if dest.type == "segment" and not dest.write_key:
            raise ConfigError(f"{where}.write_key: needed by the segment type")
        for wanted in dest.sources:
            if settings.sources and wanted not in {s.name for s in settings.sources}:
                raise ConfigError(f"{where}.sources: unknown source {wanted!r}")
        for key in ("batch_size", "max_attempts", "concurrency"):
            if getattr(dest, key) < 1:
                raise ConfigError(f"{where}.{key}: must be at least 1")
        for key in ("timeout", "backoff_min", "backoff_max", "poll_interval"):
            if getattr(dest, key) <= 0:
                raise ConfigError(f"{where}.{key}: must be more than 0")
        if dest.backoff_max < dest.backoff_min:
            raise ConfigError(f"{where}.backoff_max: must be at least backoff_min")
    _check_log(settings.log)
    if settings.archive.flush_rows < 1:
        raise ConfigError("archive.flush_rows: must be at least 1")
    if settings.archive.flush_interval <= 0:
        raise ConfigError("archive.flush_interval: must be more than 0")
    if settings.privacy.rewrite_delay < 0:
        raise ConfigError("privacy.rewrite_delay: must not be negative")
    if settings.privacy.retention_interval <= 0:
        raise ConfigError("privacy.retention_interval: must be positive")


MIN_ADMIN_TOKEN = 16


def _check_server(server: ServerSettings) -> None:
    """The connection limits, the public URL, the admin listener and the admin token."""
    for key in ("max_header_bytes", "max_headers", "header_timeout", "idle_timeout",
                "max_connections", "admin_auth_failures"):
        if getattr(server, key) <= 0:
            raise ConfigError(f"server.{key}: must be more than 0")
    if not 0 <= server.admin_port <= 65535:
        raise ConfigError("server.admin_port: must be between 0 and 65535")
    if server.public_url:
        parts = urllib.parse.urlsplit(server.public_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
                or parts.fragment or parts.username or parts.password:
            raise ConfigError("server.public_url: must be an http(s) URL with a host and no "
                              f"query, e.g. https://track.example.com (got {server.public_url!r})")
    if server.admin_token and len(server.admin_token) < MIN_ADMIN_TOKEN:
        raise ConfigError(f"server.admin_token: must be at least {MIN_ADMIN_TOKEN} characters "
                          "(leave it out to have one generated)")


def _check_log(log: LogSettings) -> None:
    """The NATS log's settings; checked even before `serve` can use them."""
    for url in log.url.split(","):
        if log.url and not re.match(r"^(nats|tls)://[^\s/]+$", url.strip()):
            raise ConfigError(f"log.url: expected nats://host:port[,nats://...], got {url!r}")
    if not re.match(r"^[A-Za-z0-9_-]{1,64}$", log.stream):
        raise ConfigError("log.stream: letters, digits, - and _ only (at most 64)")
    if not 1 <= log.replicas <= 5:
        raise ConfigError("log.replicas: must be between 1 and 5")
    for key in ("duplicate_window_s", "ack_wait_s"):
        if getattr(log, key) <= 0:
            raise ConfigError(f"log.{key}: must be more than 0")
    if log.max_mb < 0:
        raise ConfigError("log.max_mb: must not be negative")
    if log.max_ack_pending < 1:
        raise ConfigError("log.max_ack_pending: must be at least 1")


def with_generated(settings: Settings, credentials: dict[str, Any]) -> Settings:
    """Fill what the user left out (a default source, an admin token) from `credentials`.

    `credentials` is the persisted content of <data_dir>/credentials.json; missing values are
    generated into it, so a restart keeps the same keys.
    """
    generated: list[str] = []
    server = settings.server
    if not server.admin_token:
        token = credentials.setdefault("admin_token", "adm_" + secrets.token_hex(16))
        server = dataclasses.replace(server, admin_token=token)
        generated.append("admin_token")
    sources = settings.sources
    if not sources:
        fresh = "default_write_key" not in credentials
        key = credentials.setdefault("default_write_key", "wk_" + secrets.token_hex(16))
        name = credentials.setdefault(
            "default_source", DEFAULT_SOURCE if fresh else LEGACY_DEFAULT_SOURCE)
        sources = (SourceSettings(name=name, write_keys=[key]),)
        generated.append("default_source")
    return dataclasses.replace(settings, server=server, sources=sources,
                               generated=tuple(generated))


__all__ = ["SETTINGS", "Settings", "load", "with_generated"]


def to_json(settings: Settings) -> str:
    """Settings as JSON, to hand them to worker processes."""
    import json

    return json.dumps(dataclasses.asdict(settings))


def from_json(text: str) -> Settings:
    import json

    raw = json.loads(text)
    return Settings(
        server=_build(ServerSettings, "server", raw["server"]),
        warehouse=_build(WarehouseSettings, "warehouse", raw["warehouse"]),
        log=_build(LogSettings, "log", raw["log"]),
        archive=_build(ArchiveSettings, "archive", raw["archive"]),
        privacy=_build(PrivacySettings, "privacy", raw.get("privacy", {})),
        sources=tuple(_build(SourceSettings, "sources", s) for s in raw["sources"]),
        destinations=tuple(_build(DestinationSettings, "destinations", d)
                           for d in raw["destinations"]),
        generated=tuple(raw.get("generated", ())))
