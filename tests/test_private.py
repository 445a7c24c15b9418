"""trackd.private: secrets written private from creation, data dirs made private or refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from trackd import private
from trackd.errors import ConfigError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_secret_is_0600_whatever_the_umask_and_replaced_whole(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        target = tmp_path / "credentials.json"
        target.write_text("old")
        os.chmod(target, 0o644)
        private.write_private(target, '{"admin_token": "x"}')
    finally:
        os.umask(old)
    assert target.read_text() == '{"admin_token": "x"}'
    assert mode(target) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["credentials.json"]


def test_links_out_of_the_data_dir_are_left_alone(tmp_path: Path) -> None:
    outside = tmp_path / "shared.txt"
    outside.write_text("not trackd's")
    os.chmod(outside, 0o644)
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    (data / "link").symlink_to(outside)
    private.secure_data_dir(data)
    assert mode(data) == 0o700
    assert mode(outside) == 0o644


def test_a_data_dir_that_cannot_be_made_private_is_refused(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, 0o755)

    def not_owner(path: object, mode: int) -> None:
        # The seam: tests run as a user who owns (or, as root, may change) every file.
        raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(os, "chmod", not_owner)
    with pytest.raises(ConfigError) as refused:
        private.secure_data_dir(data)
    assert f"chmod -R go= {data}" in str(refused.value)
    assert "readable by other users" in str(refused.value)
