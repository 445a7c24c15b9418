"""What every command shares: --config/--data-dir, settings loading, one-line errors."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from trackd import settings as settings_mod
from trackd.errors import TrackdError
from trackd.private import write_private
from trackd.settings import Settings

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
F = TypeVar("F", bound=Callable[..., Any])


def config_options(fn: F) -> F:
    fn = click.option("--data-dir", type=click.Path(file_okay=False),
                      help="Data directory (default: server.data_dir, ./trackd-data).")(fn)
    fn = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                      help="Config file (default: ./trackd.toml when it exists).")(fn)
    return fn


def not_empty(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A click callback: an option or argument given as "" is refused."""
    if value is not None and not value.strip():
        raise click.BadParameter("must not be empty")
    return value


def one_line_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TrackdError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise click.ClickException(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(
                ": ")) from None
        except Exception as exc:
            # httpx is imported by the commands that ask the server, not here (it takes a
            # tenth of a second); an error of it can only come once it has been imported
            httpx = sys.modules.get("httpx")
            if httpx is not None and isinstance(exc, (httpx.HTTPError, httpx.InvalidURL)):
                raise click.ClickException(f"could not ask the server: {exc}") from None
            raise

    return wrapper  # type: ignore[return-value]


def load_settings(config_path: str | None, data_dir: str | None,
                  overrides: dict[str, Any] | None = None, *, persist: bool = False) -> Settings:
    """Settings from the file, environment and flags, completed from credentials.json.

    Only `serve` (persist=True) creates the data dir and stores generated credentials; the
    commands that read never write anything.
    """
    path = Path(config_path) if config_path else None
    if path is None and Path("trackd.toml").is_file():
        path = Path("trackd.toml")
    loaded = settings_mod.load(path, data_dir=data_dir, overrides=overrides)
    credentials_path = loaded.data_dir / "credentials.json"
    credentials: dict[str, Any] = {}
    if credentials_path.is_file():
        credentials = json.loads(credentials_path.read_text())
    completed = settings_mod.with_generated(loaded, credentials)
    if completed.generated and persist:
        loaded.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(credentials_path, json.dumps(credentials, indent=2))
    return completed


def require_data(settings: Settings) -> None:
    """Commands that read data stop with one line when there is no data dir at all."""
    if not (settings.data_dir / "log").is_dir() and not settings.log.url:  # NATS: no dir
        raise click.ClickException(f"no trackd data in {settings.data_dir} (start the server "
                                   "with `trackd serve`, or pass --data-dir)")
