"""Destination and archive settings are checked at start-up with one clear error."""

from __future__ import annotations

import pytest

from trackd.errors import ConfigError
from trackd.settings import load

HOOK = "TRACKD_DESTINATION_HOOK_"


@pytest.mark.parametrize(("env", "error"), [
    ({HOOK + "BATCH_SIZE": "0"}, "destinations[hook].batch_size: must be at least 1"),
    ({HOOK + "MAX_ATTEMPTS": "0"}, "destinations[hook].max_attempts: must be at least 1"),
    ({HOOK + "CONCURRENCY": "0"}, "destinations[hook].concurrency: must be at least 1"),
    ({HOOK + "TIMEOUT": "0"}, "destinations[hook].timeout: must be more than 0"),
    ({HOOK + "BACKOFF_MIN": "-1"}, "destinations[hook].backoff_min: must be more than 0"),
    ({HOOK + "POLL_INTERVAL": "0"}, "destinations[hook].poll_interval: must be more than 0"),
    ({HOOK + "BACKOFF_MIN": "5", HOOK + "BACKOFF_MAX": "1"},
     "destinations[hook].backoff_max: must be at least backoff_min"),
    ({"TRACKD_ARCHIVE_FLUSH_ROWS": "0"}, "TRACKD_ARCHIVE_FLUSH_ROWS: must be at least 1"),
    ({"TRACKD_ARCHIVE_FLUSH_INTERVAL": "0"}, "TRACKD_ARCHIVE_FLUSH_INTERVAL: must be more than 0"),
])
def test_bad_values_are_refused(env: dict[str, str], error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(None, env={HOOK + "URL": "http://127.0.0.1:9/x", **env})
    assert str(caught.value) == error


def test_new_keys_read_from_the_environment() -> None:
    settings = load(None, env={HOOK + "URL": "http://127.0.0.1:9/x",
                               HOOK + "CONCURRENCY": "8", HOOK + "POLL_INTERVAL": "0.5",
                               HOOK + "LEDGER_RETENTION_DAYS": "30",
                               "TRACKD_ARCHIVE_FLUSH_ROWS": "1000"})
    [hook] = settings.destinations
    assert (hook.concurrency, hook.poll_interval, hook.ledger_retention_days) == (8, 0.5, 30.0)
    assert settings.archive.flush_rows == 1000
