"""`trackd serve --ephemeral`: a server for tests, on data that is thrown away.

The data dir is a new private temporary directory (removed when the server stops); log commits
skip fsync; a config without sources gets the source `default` with the write key `test` (or
the one given); the warehouse, the archive and the destinations are off (a test must never
deliver to a real endpoint), and the test endpoints are on (see `endpoints`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from trackd.settings import Settings

DEFAULT_WRITE_KEY = "test"


def prepare(data_dir: Path, write_key: str) -> None:
    """Seed the fresh data dir's credentials, so a config without sources gets `write_key`."""
    path = data_dir / "credentials.json"
    path.write_text(json.dumps({"default_write_key": write_key}))
    path.chmod(0o600)


def ephemeral(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings,
        server=dataclasses.replace(settings.server, ephemeral=True),
        warehouse=dataclasses.replace(settings.warehouse, enabled=False),
        archive=dataclasses.replace(settings.archive, enabled=False),
        log=dataclasses.replace(settings.log, url=""),  # the embedded log, in the temp dir
        destinations=())
