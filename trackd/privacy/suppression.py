"""The suppression list: subjects whose messages are answered 200 and stored nowhere.

The list is `<data_dir>/privacy/suppressed.txt`, written whole (atomically, private) by the
pipeline process when a regulation adds or lifts a suppression: its first line is a version
number, then one salted subject hash a line (`Keys.subject_hash`), so it holds no identifier.
Each gateway worker re-reads it when it changes (`SuppressionList.refresh`, a `stat` every
`REFRESH_SECONDS`) and acknowledges the version it applies in `<run_dir>/privacy/<worker>`;
a regulation counts its suppression as done once every worker has acknowledged it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trackd.privacy.keys import Keys, privacy_dir
from trackd.private import write_private

FILE_NAME = "suppressed.txt"
REFRESH_SECONDS = 0.25
SEEN_LIMIT = 100_000  # ids remembered between changes of the list (then forgotten at once)


def suppression_path(data_dir: Path) -> Path:
    return privacy_dir(data_dir) / FILE_NAME


def read_list(path: Path) -> tuple[int, set[str]]:
    """(version, hashes) of a list file; (0, empty) when there is none yet."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return 0, set()
    if not lines:
        return 0, set()
    return int(lines[0]), {line for line in lines[1:] if line}


def write_list(path: Path, hashes: Iterable[str]) -> int:
    """Replace the list (a new version); returns the version written."""
    version, _ = read_list(path)
    version += 1
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(path, "\n".join([str(version), *sorted(hashes)]) + "\n")
    return version


class SuppressionList:
    """A gateway worker's copy of the list, kept current by `refresh`."""

    def __init__(self, data_dir: Path, keys: Keys, ack: Path | None = None) -> None:
        self.path = suppression_path(data_dir)
        self.keys = keys
        self.ack = ack
        self.hashes: set[str] = set()
        self.version = -1
        self._stamp: tuple[int, int] | None = None
        self._seen: dict[str, bool] = {}  # "u:id" -> suppressed, for ids seen since a change

    def refresh(self) -> bool:
        """Re-read the file if it changed; acknowledge its version. Returns whether it did."""
        try:
            st = os.stat(self.path)
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp and self.version >= 0:
            return False
        self.version, self.hashes = read_list(self.path)
        self._seen = {}
        self._stamp = stamp
        if self.ack is not None:
            self.ack.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                write_private(self.ack, str(self.version))
        return True

    def apply(self, version: int, hashes: set[str]) -> None:
        """Take a list read elsewhere (the shared list of a NATS deployment)."""
        if version != self.version:
            self.version, self.hashes, self._seen = version, hashes, {}

    def holds(self, message: dict[str, Any]) -> bool:
        """Whether the message's userId or anonymousId is suppressed (call only when the list
        has entries: each id costs an HMAC)."""
        user_id = message.get("userId")
        if user_id is not None and self._check("u", user_id):
            return True
        anonymous_id = message.get("anonymousId")
        return anonymous_id is not None and self._check("a", anonymous_id)

    def _check(self, kind: str, value: object) -> bool:
        if isinstance(value, dict | list):
            return False
        key = f"{kind}:{value}"
        known = self._seen.get(key)
        if known is None:
            if len(self._seen) > SEEN_LIMIT:
                self._seen.clear()
            known = self._seen[key] = self.keys.subject_hash(kind, str(value)) in self.hashes
        return known


def acknowledged(run_dir: Path, workers: int) -> int:
    """The lowest list version every gateway worker has acknowledged (-1: one has not)."""
    versions = []
    for index in range(workers):
        try:
            versions.append(int((run_dir / "privacy" / f"gateway-{index}").read_text()))
        except (FileNotFoundError, ValueError):
            return -1
    return min(versions) if versions else -1
