"""How long `./scripts/serve` takes to its banner when there is nothing to install.

    .venv/bin/python bench/startup.py [--runs 10] [--root DIR] [--root DIR ...]

Each root (default: this checkout) gets a data dir made by one first start (not counted); then
`./scripts/serve --data-dir D --port 0` is started `--runs` times, the roots taking turns
within each round, and timed from the exec to the banner's "trackd is listening" line; then
stopped (SIGTERM to its process group). Prints each time and the median, min and max per
root. Several roots compare two trees in one run: each needs a .venv (PYTHONPATH is set to
the root, so the trackd that runs is the root's even when the roots share one .venv). See
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start_once(root: Path, data: Path, timeout: float = 60.0) -> float:
    """Seconds from exec to the banner (raises when it does not come)."""
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
        return time.monotonic() - started
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--root", type=Path, action="append",
                        help="a checkout to time (repeat to compare; default: this one)")
    args = parser.parse_args()
    roots = [r.resolve() for r in args.root or [ROOT]]
    times: dict[Path, list[float]] = {root: [] for root in roots}
    with tempfile.TemporaryDirectory(prefix="trackd-startup-") as tmp:
        data = {root: Path(tmp) / f"data-{i}" for i, root in enumerate(roots)}
        for root in roots:
            start_once(root, data[root])  # the first start makes the data dir
        for _ in range(args.runs):
            for root in roots:
                times[root].append(start_once(root, data[root]))
                print(f"{root}: {times[root][-1]:.2f} s", flush=True)
    for root, found in times.items():
        print(f"{root}: median {statistics.median(found):.2f} s, min {min(found):.2f}, "
              f"max {max(found):.2f} ({len(found)} starts)")


if __name__ == "__main__":
    main()
