"""Gateway workers never outlive their supervisor, and a new server clears what an old one left.

- A worker asks the kernel for SIGTERM when its parent dies (`PR_SET_PDEATHSIG`, Linux) and
  also checks once a second that its parent is still the supervisor that started it (every
  system): either way it drains and exits, as on `trackd stop`.
- The supervisor records each worker's pid in `<run_dir>/worker-<N>.pid`. A new `trackd serve`
  on the same data dir stops any process named there that is still a gateway worker of this
  run dir (checked on its command line): the leftover of a server that was killed.
- When the address is taken anyway, `holder_of(port)` names the process holding it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from trackd.observability import get_logger

log = get_logger("supervisor")
WORKER_MODULE = "trackd.server.worker"
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Have the kernel send SIGTERM when the parent dies (Linux); exit now if it has already."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if parent_gone(parent):
        os.kill(os.getpid(), signal.SIGTERM)


def parent_gone(parent: int) -> bool:
    """Whether the process that started us has died (we were handed to another parent)."""
    return os.getppid() != parent


def pid_file(run_dir: Path, index: int) -> Path:
    return run_dir / f"worker-{index}.pid"


def command_line(pid: int) -> list[str] | None:
    """The arguments of process `pid`; None when there is no such (live) process."""
    proc = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self/cmdline").exists():
        try:
            args = proc.read_bytes().split(b"\0")
        except OSError:
            return None
        words = [a.decode("utf-8", "replace") for a in args if a]
        return words or None  # a zombie has none
    try:
        out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True,
                             text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.split() or None


def is_worker_of(pid: int, run_dir: Path) -> bool:
    args = command_line(pid)
    if not args or WORKER_MODULE not in args:
        return False
    rest = args[args.index(WORKER_MODULE) + 1:]
    return bool(rest) and Path(rest[0]).resolve() == run_dir.resolve()


def _parent_of(pid: int) -> int | None:
    try:
        if Path("/proc/self/stat").exists():
            return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        out = subprocess.run(["ps", "-o", "ppid=", "-p", str(pid)], capture_output=True,
                             text=True, timeout=10, check=False).stdout
        return int(out.strip())
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def _orphaned(pid: int) -> bool:
    """Whether worker `pid` has lost the supervisor that started it (named on its command
    line), so that a server still starting up never has its workers taken for leftovers."""
    args = command_line(pid) or []
    started_by = args[-1] if args and args[-1].isdigit() else None
    return started_by is None or str(_parent_of(pid)) != started_by


def stop_leftover_workers(run_dir: Path, timeout: float) -> list[int]:
    """Stop the gateway workers of this run dir that a dead server left; their pids."""
    stopped: list[int] = []
    for path in sorted(run_dir.glob("worker-*.pid")):
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid > 0 and is_worker_of(pid, run_dir) and not _orphaned(pid):
            continue  # its supervisor lives: not ours to stop
        if pid > 0 and pid != os.getpid() and is_worker_of(pid, run_dir):
            log.warning("stopping a gateway worker left by a server that is no longer running",
                        extra={"pid": pid})
            _stop(pid, run_dir, timeout)
            stopped.append(pid)
        path.unlink(missing_ok=True)
    return stopped


def _stop(pid: int, run_dir: Path, timeout: float) -> None:
    """SIGTERM (and SIGCONT, should it be stopped); SIGKILL after `timeout` seconds."""
    for sig in (signal.SIGTERM, signal.SIGCONT):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while is_worker_of(pid, run_dir):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.05)


def holder_of(port: int) -> str | None:
    """`pid N: command` of a process listening on TCP `port`, when this system can tell."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == "0A" and int(
                        fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        words = " ".join(command_line(int(entry.name)) or ["?"]).split()
                        return f"pid {entry.name}: {' '.join(words)[:120]}"
    return None
