"""Cost of the privacy rules on the gateway's hot path, in process, as ratios in one run.

Run from the repository root (it imports bench/bodies.py for the bench scenarios' bodies).

    .venv/bin/python bench/privacy_overhead.py [--seconds 10]

Times the gateway's judging of a 100-message batch (parse, validate, enrich, encode: all it
does before the log) with no privacy gate, with a gate but no rule and an empty suppression
list (every source's default), with 1,000 suppressed subjects (each message's ids are hashed),
and with `ip = "truncate"` and two `pii` rules.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bodies import python_item  # noqa: E402

from trackd.gateway.ingest import Ingestor  # noqa: E402
from trackd.observability import Registry  # noqa: E402
from trackd.privacy.gate import PrivacyGate  # noqa: E402
from trackd.privacy.keys import load_keys  # noqa: E402
from trackd.privacy.suppression import suppression_path, write_list  # noqa: E402
from trackd.settings import SourceSettings  # noqa: E402


def _body() -> bytes:
    rng = random.Random(6)
    now = datetime.now(UTC)
    items = [python_item(rng, now, rng.choice(["track", "page", "identify"]))
             for _ in range(100)]
    return json.dumps({"batch": items, "writeKey": "wk"}).encode()


def _rates(judges: dict[str, Callable[[], Any]], seconds: float) -> dict[str, float]:
    """Batches judged per second, each case's best of five rounds, the cases interleaved so
    that a busy moment of the machine hits them all alike."""
    best = dict.fromkeys(judges, 0.0)
    for _ in range(5):
        for name, judge in judges.items():
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / 5 / len(judges):
                judge()
                count += 1
            best[name] = max(best[name], count / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    body = _body()
    plain = SourceSettings(name="web", write_keys=["wk"])
    ruled = SourceSettings(name="web", write_keys=["wk"], ip="truncate", pii=[
        {"path": "context.traits.email", "action": "hash"},
        {"path": "properties.revenue", "action": "drop"}])
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        cases: dict[str, Ingestor] = {
            "no gate": Ingestor((plain,), None, Registry()),  # type: ignore[arg-type]
            "gate, no rule": Ingestor((plain,), None, Registry(),  # type: ignore[arg-type]
                                      privacy=PrivacyGate((plain,), data)),
        }
        keys = load_keys(data / "s")
        write_list(suppression_path(data / "s"),
                   [keys.subject_hash("u", f"user-{n}") for n in range(1000)])
        cases["1,000 suppressed"] = Ingestor((plain,), None, Registry(),  # type: ignore[arg-type]
                                             privacy=PrivacyGate((plain,), data / "s"))
        cases["ip + 2 pii rules"] = Ingestor((ruled,), None, Registry(),  # type: ignore[arg-type]
                                             privacy=PrivacyGate((ruled,), data))
        rates = _rates({name: lambda i=ingestor: i._judge_batch(body, None, "203.0.113.9")
                        for name, ingestor in cases.items()}, args.seconds)
    base = rates["no gate"]
    for name, rate in rates.items():
        line = f"{name:>18}: {rate * 100:>9.0f} messages/s  ({rate / base:.3f} x no gate)"
        sys.stdout.write(line + "\n")


if __name__ == "__main__":
    main()
