"""Every file trackd writes is private to its user: directories 0700, files 0600.

- `restrict_process()`: umask 077, called first by every trackd process (the CLI's entry
  point, each gateway worker). What SQLite (and its -wal/-shm files), DuckDB (its .wal and
  spill files), pyarrow and trackd itself create is then private from the moment it exists.
- `write_private(path, text)`: a secret written to a new 0600 file, flushed, then renamed over
  `path`, so no one can read it between creation and a chmod.
- `secure_data_dir(path)`: `trackd serve` creates the data dir 0700, or takes group and other
  permissions away from an existing one and everything in it (data dirs made by earlier
  versions were 0755, their files 0644), saying so in one warning line. When that cannot be
  done (not the owner), it refuses to start, as PostgreSQL does with a data dir others can read.
- `listen_unix(path)`: the admin socket, 0600 (uvicorn would make its own 0666).
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from trackd.errors import ConfigError
from trackd.observability import get_logger

UMASK = 0o077
log = get_logger("files")


def restrict_process() -> None:
    """New files and directories of this process: 0600 and 0700."""
    os.umask(UMASK)


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` as a 0600 file, whole or not at all."""
    partial = path.with_name(f".{path.name}.tmp")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, path)


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (after a rename in it: the new entry is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def secure_data_dir(path: Path) -> None:
    """Create the data dir 0700, or make an existing one and its contents private."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    tightened = 0
    try:
        for entry in [path, *_tree(path)]:
            mode = stat.S_IMODE(os.lstat(entry).st_mode)
            if mode & 0o077:
                os.chmod(entry, mode & ~0o077)
                tightened += 1
    except PermissionError as exc:
        raise ConfigError(f"the data dir {path} is readable by other users and trackd cannot "
                          f"change that ({exc.strerror}: {exc.filename}); make it private "
                          f"with: chmod -R go= {path}") from None
    if tightened:
        log.warning("the data dir was readable by other users: group and other permissions "
                    "removed", extra={"data_dir": str(path), "entries": tightened})


def _tree(root: Path) -> list[Path]:
    """Every directory and file under `root`, symbolic links left alone (and not followed)."""
    found: list[Path] = []
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            entry = Path(directory, name)
            if not entry.is_symlink():
                found.append(entry)
    return found


def listen_unix(path: Path, backlog: int = 128) -> socket.socket:
    """A listening unix socket at `path` that only this user can connect to."""
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock
