"""Console sessions on a real file: a logout is seen by every process serving the data dir, at
once and after a restart, and expired revocations are dropped from the file."""

from __future__ import annotations

import time
from pathlib import Path

from trackd.console.session import Sessions

TOKEN = "test-admin-token"


def test_a_logout_in_one_process_ends_the_session_in_another(tmp_path: Path) -> None:
    path = tmp_path / "console" / "revoked-sessions"
    here, there = Sessions(TOKEN, revoked=path), Sessions(TOKEN, revoked=path)
    cookie, other = here.issue(), here.issue()
    assert there.nonce(cookie) is not None
    here.revoke(cookie)
    assert here.nonce(cookie) is None and there.nonce(cookie) is None
    assert there.nonce(other) is not None
    assert Sessions(TOKEN, revoked=path).nonce(cookie) is None  # after a restart
    assert path.stat().st_mode & 0o777 == 0o600


def test_expired_revocations_leave_the_file_at_start(tmp_path: Path) -> None:
    path = tmp_path / "revoked-sessions"
    first = Sessions(TOKEN, lifetime=60, revoked=path)
    live = first.issue()
    first.revoke(live)
    kept = path.read_text()
    with path.open("a") as file:
        file.write(f"{int(time.time()) - 60} expired-a-minute-ago\ntorn-line-without-expiry\n")
    restarted = Sessions(TOKEN, lifetime=60, revoked=path)
    assert path.read_text() == kept
    assert restarted.nonce(live) is None
