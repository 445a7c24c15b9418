"""How long `./scripts/serve` takes to its banner when there is nothing to install.

    .venv/bin/python bench/startup.py [--runs 10] [--root DIR] [--root DIR ...]

Each root (default: this checkout) gets a data dir made by one first start (not counted); then
`./scripts/serve --data-dir D --port 0` is started `--runs` times, the roots taking turns
within each round, and timed from the exec to the banner's "trackd is listening" line (ready:
the tracking API answers) and to the pipeline running (server.json says `"pipeline":
"running"`; a tree that has no such field runs it by the banner); then stopped (SIGTERM to its
process group). Prints each time and the median, min and max per root. Several roots compare
two trees in one run: each needs a .venv (PYTHONPATH is set to the root, so the trackd that
runs is the root's even when the roots share one .venv). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start_once(root: Path, data: Path, timeout: float = 60.0) -> tuple[float, float]:
    """Seconds from exec to the banner and to the pipeline running (raises when either does
    not come)."""
    started = time.monotonic()
    proc = subprocess.Popen(["./scripts/serve", "--data-dir", str(data), "--port", "0"],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.stdout is not None
    seen = b""
    try:
        while b"trackd is listening" not in seen:
            if time.monotonic() - started > timeout or proc.poll() is not None:
                raise RuntimeError(f"no banner from {root}: {seen.decode()[-300:]}")
            ready, _, _ = select.select([proc.stdout], [], [], 0.02)
            if ready:
                seen += os.read(proc.stdout.fileno(), 65536)
        banner = time.monotonic() - started
        while not _pipeline_runs(data):
            if time.monotonic() - started > timeout or proc.poll() is not None:
                raise RuntimeError(f"the pipeline of {root} did not start")
            time.sleep(0.01)
        return banner, time.monotonic() - started
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


def _pipeline_runs(data: Path) -> bool:
    try:
        return json.loads((data / "run" / "server.json").read_text()).get(
            "pipeline", "running") == "running"
    except (OSError, ValueError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--root", type=Path, action="append",
                        help="a checkout to time (repeat to compare; default: this one)")
    args = parser.parse_args()
    roots = [r.resolve() for r in args.root or [ROOT]]
    times: dict[Path, list[tuple[float, float]]] = {root: [] for root in roots}
    with tempfile.TemporaryDirectory(prefix="trackd-startup-") as tmp:
        data = {root: Path(tmp) / f"data-{i}" for i, root in enumerate(roots)}
        for root in roots:
            start_once(root, data[root])  # the first start makes the data dir
        for _ in range(args.runs):
            for root in roots:
                times[root].append(start_once(root, data[root]))
                ready, running = times[root][-1]
                print(f"{root}: ready {ready:.2f} s, pipeline running {running:.2f} s",
                      flush=True)
    for root, found in times.items():
        for i, what in enumerate(("ready", "pipeline running")):
            each = [pair[i] for pair in found]
            print(f"{root}: {what}: median {statistics.median(each):.2f} s, min "
                  f"{min(each):.2f}, max {max(each):.2f} ({len(each)} starts)")


if __name__ == "__main__":
    main()
