"""Facts about the machine and the software versions, recorded with every run."""

from __future__ import annotations

import os
import platform
import re
import shutil
import sqlite3
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


def _run(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    return (out.stdout + out.stderr).strip()


def _first_match(pattern: str, text: str) -> str:
    found = re.search(pattern, text, re.MULTILINE)
    return found.group(1).strip() if found else "unknown"


def _versions(names: list[str]) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def facts(baseline_python: Path) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    meminfo = Path("/proc/meminfo").read_text()
    os_release = Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else ""
    mem_kb = int(_first_match(r"^MemTotal:\s+(\d+)", meminfo))
    nginx = _run(["nginx", "-v"]) if shutil.which("nginx") else "not found"
    wrk = _run(["wrk", "-v"]).splitlines()[0] if shutil.which("wrk") else "not found"
    baseline = _run([str(baseline_python), "-c",
                     "from importlib import metadata as m; print(' '.join(f'{n} ' + "
                     "m.version(n) for n in ('fastapi', 'pydantic', 'starlette', "
                     "'uvicorn', 'httptools', 'uvloop')))"])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _first_match(r"^model name\s*:\s*(.+)$", cpuinfo),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": _first_match(r'^PRETTY_NAME="?([^"\n]+)"?', os_release),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "nginx": nginx.replace("nginx version: ", ""),
        "wrk": wrk,
        "trackd_venv": _versions(["trackd", "uvicorn", "httptools", "uvloop", "msgspec",
                                  "duckdb"]),
        "baseline_venv": baseline,
        "disk": _run(["df", "-hT", str(Path(__file__).resolve().parent)]).splitlines()[-1],
    }
