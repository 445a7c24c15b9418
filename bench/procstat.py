"""CPU and memory of a server's processes, read from /proc (Linux only).

A server is started in a session of its own, so its process group holds exactly its
processes: the master or supervisor and every worker it spawns.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def group_pids(pgid: int) -> list[int]:
    """Live processes whose process group is `pgid`."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != b"Z":
            pids.append(int(name))
    return pids


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process so far; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return 0


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return float(sum(parts) - idle), float(sum(parts))


def cpu_stall_us() -> int | None:
    """Microseconds in which some runnable task waited for a CPU (Linux PSI), or None."""
    try:
        with open("/proc/pressure/cpu") as f:
            first = f.readline().split()
    except OSError:
        return None
    return int(first[-1].split("=")[1])


@dataclass
class GroupMonitor:
    """Samples RSS of every process in a group while a load runs; measures CPU over the run."""

    pgid: int
    interval: float = 0.2
    peak_rss: dict[int, int] = field(default_factory=dict)
    roles: dict[int, str] = field(default_factory=dict)
    cpu_by_pid: dict[int, float] = field(default_factory=dict)  # CPU seconds over the run
    _cpu_start: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _busy0: tuple[float, float] = (0.0, 0.0)
    _stall0: int | None = None
    _t0: float = 0.0

    def start(self) -> None:
        self._cpu_start = {pid: cpu_seconds(pid) for pid in group_pids(self.pgid)}
        self._busy0 = machine_busy()
        self._stall0 = cpu_stall_us()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            for pid in group_pids(self.pgid):
                rss = rss_bytes(pid)
                if rss > self.peak_rss.get(pid, 0):
                    self.peak_rss[pid] = rss
                if pid not in self.roles:
                    self.roles[pid] = cmdline(pid)
            self._stop.wait(self.interval)

    def stop(self) -> dict[str, float]:
        """Stop sampling; returns server CPU (cores) and machine CPU use (0..1) over the run."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        wall = time.monotonic() - self._t0
        used = 0.0
        self.cpu_by_pid = {}
        for pid in group_pids(self.pgid):
            self.cpu_by_pid[pid] = cpu_seconds(pid) - self._cpu_start.get(pid, 0.0)
            used += self.cpu_by_pid[pid]
            if pid not in self.roles:
                self.roles[pid] = cmdline(pid)
        busy1 = machine_busy()
        total = busy1[1] - self._busy0[1]
        machine = (busy1[0] - self._busy0[0]) / total if total > 0 else 0.0
        stall1 = cpu_stall_us()
        stall = (None if stall1 is None or self._stall0 is None or wall <= 0
                 else (stall1 - self._stall0) / 1e6 / wall)
        return {"server_cores": used / wall if wall > 0 else 0.0, "machine_busy": machine,
                "cpu_stall": stall, "wall_s": wall}
