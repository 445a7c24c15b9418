"""Settings: file, environment, types, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from trackd.errors import ConfigError
from trackd.settings import from_json, load, to_json, with_generated


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trackd.toml"
    path.write_text(text)
    return path


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nport = 9000\nworkers = 2\n[[sources]]\nname = "web"\n'
                           'write_keys = ["k1"]\n')
    settings = load(path, env={"TRACKD_SERVER_WORKERS": "3"}, overrides={"host": "0.0.0.0"})
    assert settings.server.port == 9000
    assert settings.server.workers == 3
    assert settings.server.host == "0.0.0.0"
    assert settings.sources[0].write_keys == ["k1"]


def test_sources_and_destinations_from_environment() -> None:
    env = {"TRACKD_SOURCE_WEB_WRITE_KEYS": "a, b", "TRACKD_SOURCE_WEB_RATE_LIMIT_PER_SECOND": "5",
           "TRACKD_DESTINATION_HOOK_URL": "http://127.0.0.1:9/x",
           "TRACKD_DESTINATION_HOOK_HEADERS": "X-A=1,X-B=2"}
    settings = load(None, env=env)
    assert settings.sources[0].name == "web"
    assert settings.sources[0].write_keys == ["a", "b"]
    assert settings.sources[0].rate_limit_per_second == 5.0
    assert settings.destinations[0].name == "hook"
    assert settings.destinations[0].headers == {"X-A": "1", "X-B": "2"}


@pytest.mark.parametrize(("text", "env", "message"), [
    ("[server]\nport = 'x'\n", {}, "server.port: expected an integer, got 'x'"),
    ("", {"TRACKD_SERVER_PORT": "eighty"}, "TRACKD_SERVER_PORT: expected an integer, got 'eighty'"),
    ("", {"TRACKD_SERVER_WORKERS": "0"}, "TRACKD_SERVER_WORKERS: must be at least 1"),
    ("[server]\nbogus = 1\n", {}, "server: unknown setting 'bogus'"),
    ("[nope]\n", {}, "unknown section [nope]"),
    ("[warehouse]\nenabled = 'yes'\n", {}, "warehouse.enabled: expected true or false"),
    ("[server]\nworkers = 0\n", {}, "server.workers: must be at least 1"),
    ("[[sources]]\nname = 'Web Site'\nwrite_keys = ['k']\n", {}, "must be a lowercase slug"),
    ("[[sources]]\nname = 'web'\n", {}, "at least one write key needed"),
    ("[[sources]]\nname = 'a'\nwrite_keys = ['k']\n[[sources]]\nname = 'b'\n"
     "write_keys = ['k']\n", {}, "is used by sources a and b"),
    ("[[destinations]]\nname = 'd'\ntype = 'ftp'\nurl = 'http://x'\n", {},
     "must be webhook or segment"),
    ("[[destinations]]\nname = 'd'\nurl = 'ftp://x'\n", {}, "must be an http(s) URL"),
    ("[server\n", {}, "not valid TOML"),
    ("[warehouse]\nbatch_rows = 0\n", {}, "warehouse.batch_rows: must be more than 0"),
    ("[warehouse]\npoll_interval = -1\n", {}, "warehouse.poll_interval: must be more than 0"),
    ("[warehouse]\ndedup_window_days = -1\n", {}, "dedup_window_days: must not be negative"),
])
def test_bad_config_is_one_clear_error(tmp_path: Path, text: str, env: dict[str, str],
                                       message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        load(write(tmp_path, text), env=env)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load(tmp_path / "absent.toml", env={})


def test_generated_source_and_token_are_kept_in_credentials() -> None:
    credentials: dict[str, object] = {}
    first = with_generated(load(None, env={}), credentials)
    again = with_generated(load(None, env={}), credentials)
    assert first.sources[0].name == "app"
    assert credentials["default_source"] == "app"
    assert first.sources[0].write_keys == again.sources[0].write_keys
    assert first.server.admin_token == again.server.admin_token
    assert first.server.admin_token.startswith("adm_")


def test_json_round_trip_for_workers() -> None:
    settings = load(None, env={"TRACKD_SOURCE_WEB_WRITE_KEYS": "k"})
    assert from_json(to_json(settings)) == settings


def test_flag_errors_name_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^--port: must be between 0 and 65535$"):
        load(None, overrides={"port": 70000}, env={})
    with pytest.raises(ConfigError, match="^--workers: must be at least 1$"):
        load(write(tmp_path, "[server]\nworkers = 2\n"), overrides={"workers": 0}, env={})


def test_a_data_dir_from_before_the_rename_keeps_its_default_source() -> None:
    """Data dirs made when the generated source was called `default` keep that name (and so
    their warehouse schema); new ones get `app`, which needs no quoting in SQL."""
    credentials: dict[str, object] = {"admin_token": "adm_x" * 4, "default_write_key": "wk_old"}
    settings = with_generated(load(None, env={}), credentials)
    assert [(s.name, s.write_keys) for s in settings.sources] == [("default", ["wk_old"])]
    assert credentials["default_source"] == "default"
