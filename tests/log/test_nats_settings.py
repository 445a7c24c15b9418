"""The NATS log's [log] settings are checked at start-up, each bad value with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from trackd.errors import ConfigError
from trackd.settings import load


@pytest.mark.parametrize(("text", "message"), [
    ("url = 'http://nats:4222'", "log.url: expected nats://host:port"),
    ("url = 'nats://a:4222,nats://b/x'", "log.url: expected nats://host:port"),
    ("stream = 'trackd.events'", "log.stream: letters, digits, - and _ only"),
    ("replicas = 7", "log.replicas: must be between 1 and 5"),
    ("duplicate_window_s = 0", "log.duplicate_window_s: must be more than 0"),
    ("ack_wait_s = -1", "log.ack_wait_s: must be more than 0"),
    ("max_mb = -5", "log.max_mb: must not be negative"),
    ("max_ack_pending = 0", "log.max_ack_pending: must be at least 1"),
])
def test_bad_nats_log_settings_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "trackd.toml"
    config.write_text(f"[log]\n{text}\n")
    with pytest.raises(ConfigError, match=message) as caught:
        load(config, env={})
    assert "\n" not in str(caught.value)


def test_a_list_of_nats_servers_is_taken(tmp_path: Path) -> None:
    config = tmp_path / "trackd.toml"
    config.write_text("[log]\nurl = 'nats://10.0.0.5:4222, nats://10.0.0.6:4222'\n")
    assert load(config, env={}).log.url == "nats://10.0.0.5:4222, nats://10.0.0.6:4222"


def test_the_defaults_keep_the_embedded_log(tmp_path: Path) -> None:
    config = tmp_path / "trackd.toml"
    config.write_text("[log]\nstream = 'events'\nreplicas = 3\nduplicate_window_s = 300\n")
    settings = load(config, env={})
    assert (settings.log.url, settings.log.stream, settings.log.replicas,
            settings.log.duplicate_window_s) == ("", "events", 3, 300.0)
