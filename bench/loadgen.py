"""Run wrk with bench/lua/post.lua and read back its JSON summary and its own CPU use."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

LUA = Path(__file__).resolve().parent / "lua" / "post.lua"


def run_wrk(url: str, *, templates: str, auth: str, run_id: str, connections: int,
            duration: float, result: Path, rate: float = 0.0, threads: int = 1,
            timeout_s: float = 5.0) -> dict[str, Any]:
    """One bounded wrk run; returns wrk's summary plus `wrk_cores` (its CPU / wall time)."""
    env = dict(os.environ, BENCH_TEMPLATES=templates, BENCH_AUTH=auth, BENCH_RUN=run_id,
               BENCH_RESULT=str(result), BENCH_RATE=str(rate))
    result.unlink(missing_ok=True)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
               f"--timeout={timeout_s:g}s", "--latency", "-s", str(LUA), url]
    started = time.monotonic()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = started + duration + 30
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    output = proc.stdout.read().decode("utf-8", "replace") if proc.stdout else ""
    if proc.returncode != 0 or not result.exists():
        raise RuntimeError(f"wrk failed ({proc.returncode}): {output.strip()[-500:]}")
    summary: dict[str, Any] = json.loads(result.read_text())
    summary["wrk_cores"] = (usage.ru_utime + usage.ru_stime) / wall if wall else 0.0
    summary["command"] = " ".join(command)
    return summary


def acked_requests(summary: dict[str, Any]) -> int:
    """Requests answered 2xx (wrk counts >= 400 as status errors; servers here send 200)."""
    return int(summary["requests"]) - int(summary["errors"]["status"])


__all__ = ["LUA", "acked_requests", "run_wrk"]
