"""Per-source IP and PII rules: what they do to a message, and the start-up errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from trackd.errors import ConfigError
from trackd.privacy.keys import load_keys
from trackd.privacy.policy import compile_policy, truncate_ip
from trackd.settings import load


@pytest.mark.parametrize(("address", "kept"), [
    ("203.0.113.77", "203.0.113.0"),
    ("10.1.2.3", "10.1.2.0"),
    ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3::"),
    ("::ffff:198.51.100.9", "198.51.100.0"),
    (" 192.0.2.1 ", "192.0.2.0"),
    ("not-an-ip", None),
    ("", None),
])
def test_truncate_keeps_the_ipv4_24_and_the_ipv6_48(address: str, kept: str | None) -> None:
    assert truncate_ip(address) == kept


def _message() -> dict[str, object]:
    return {"type": "track", "userId": "u1",
            "context": {"ip": "203.0.113.77", "traits": {"email": "Ann@example.com"}},
            "properties": {"card_number": "4111", "plan": "pro", "nested": {"n": [1, 2]}}}


def test_hash_is_keyed_and_stable_and_drop_removes_the_field(tmp_path: Path) -> None:
    keys = load_keys(tmp_path)
    policy = compile_policy("drop", [
        {"path": "context.traits.email", "action": "hash"},
        {"path": "properties.card_number", "action": "drop"},
        {"path": "properties.nested", "action": "hash"},
        {"path": "properties.absent.deeper", "action": "drop"},
    ], keys.pii_hash)
    assert policy is not None
    first, second = _message(), _message()
    policy.apply(first)
    policy.apply(second)
    assert first == second  # stable
    email = first["context"]["traits"]["email"]  # type: ignore[index]
    assert isinstance(email, str) and len(email) == 64 and "example" not in email
    assert email != hashlib.sha256(b"Ann@example.com").hexdigest()  # keyed, not a plain hash
    assert "ip" not in first["context"]  # type: ignore[operator]
    assert first["properties"] == {"plan": "pro", "nested": first["properties"]["nested"]}  # type: ignore[index]
    # the same data dir gives the same key; another data dir another one
    assert load_keys(tmp_path).pii_hash("x") == keys.pii_hash("x")
    assert load_keys(tmp_path / "other").pii_hash("x") != keys.pii_hash("x")
    assert (tmp_path / "privacy" / "keys.json").stat().st_mode & 0o077 == 0


def test_a_source_that_keeps_everything_has_no_policy() -> None:
    assert compile_policy("keep", [], str) is None


@pytest.mark.parametrize(("lines", "error"), [
    ('ip = "mask"', "sources[web].ip: must be one of keep, truncate, drop, got 'mask'"),
    ('pii = [{path = "context.traits.email", action = "mask"}]',
     "sources[web].pii[0].action: must be hash or drop, got 'mask'"),
    ('pii = [{path = "context..email", action = "hash"}]',
     "sources[web].pii[0].path: must be a dotted path such as context.traits.email, "
     "got 'context..email'"),
    ('pii = [{path = "", action = "drop"}]', "sources[web].pii[0].path: must be a dotted path"),
    ('pii = [{path = "userId", action = "hash"}]',
     "sources[web].pii[0].path: userId is needed by trackd itself"),
    ('pii = [{path = "a.b", action = "hash", extra = "1"}]',
     "sources[web].pii[0]: unknown key 'extra'"),
    ('pii = ["context.ip"]', "sources[web].pii: expected a list of tables of strings"),
    ("retention_days = -1", "sources[web].retention_days: must not be negative"),
])
def test_bad_privacy_settings_are_one_line_naming_the_key(tmp_path: Path, lines: str,
                                                          error: str) -> None:
    path = tmp_path / "trackd.toml"
    path.write_text(f'[[sources]]\nname = "web"\nwrite_keys = ["k"]\n{lines}\n')
    with pytest.raises(ConfigError) as caught:
        load(path, env={})
    assert str(caught.value).startswith(error)
    assert "\n" not in str(caught.value)


def test_pii_rules_from_the_environment() -> None:
    settings = load(None, env={"TRACKD_SOURCE_WEB_WRITE_KEYS": "k",
                               "TRACKD_SOURCE_WEB_PII": "context.traits.email=hash, a.b=drop",
                               "TRACKD_SOURCE_WEB_IP": "truncate"})
    assert settings.sources[0].pii == [{"path": "context.traits.email", "action": "hash"},
                                       {"path": "a.b", "action": "drop"}]
    assert settings.sources[0].ip == "truncate"
    with pytest.raises(ConfigError, match=r"^sources\[web\]\.ip: must be one of"):
        load(None, env={"TRACKD_SOURCE_WEB_WRITE_KEYS": "k", "TRACKD_SOURCE_WEB_IP": "x"})
