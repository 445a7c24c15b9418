"""The tracking plans of a server's sources: loaded at start-up, reloaded on SIGHUP.

`SourcePlans.by_source` is the dict the gateway reads (source name -> Plan); a reload replaces
its entries one by one (the event loop's thread does it between requests, so a request sees
one plan or the other, never half of one). A plan that no longer loads keeps the previous one:
the error is logged and kept in `errors`.

Each gateway worker writes what it has in force (version per source, the last reload's error)
to `<run_dir>/plans/<worker>.json`; `read_status` merges them for `/readyz` and
`trackd status`.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from trackd.errors import PlanError
from trackd.observability import get_logger
from trackd.plans.plan import Plan, load
from trackd.settings import SourceSettings

log = get_logger("plans")


class SourcePlans:
    def __init__(self, sources: tuple[SourceSettings, ...]) -> None:
        self.paths = {src.name: Path(src.tracking_plan) for src in sources
                      if src.tracking_plan}
        self.by_source: dict[str, Plan] = {}
        self.errors: dict[str, str] = {}

    def load(self) -> SourcePlans:
        """Load every plan; PlanError (one line: file, line, field) at the first broken one."""
        for name, path in self.paths.items():
            self.by_source[name] = load(path)
        return self

    def reload(self) -> dict[str, str]:
        """Load every plan again; a broken one keeps the plan in force. Returns the errors."""
        errors: dict[str, str] = {}
        for name, path in self.paths.items():
            try:
                plan = load(path)
            except PlanError as exc:
                errors[name] = str(exc)
                log.error("tracking plan not reloaded; the previous one stays in force",
                          extra={"source": name, "error": str(exc)})
                continue
            self.by_source[name] = plan
            log.info("tracking plan loaded", extra={"source": name, "version": plan.version,
                                                    "events": len(plan.events)})
        self.errors = errors
        return errors

    def write_status(self, path: Path) -> None:
        """Record the versions in force and the last reload's errors (private to the user)."""
        doc = {name: {"version": plan.version, "error": self.errors.get(name)}
               for name, plan in self.by_source.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(doc, out)
        partial.replace(path)


def read_status(directory: Path) -> dict[str, dict[str, Any]]:
    """Per source, the plan versions the workers have in force (one, unless a reload is under
    way) and the last reload error any of them met (None when the last reload went well)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            for name, entry in json.loads(path.read_text()).items():
                merged = out.setdefault(name, {"versions": [], "error": None})
                if entry.get("version") not in merged["versions"]:
                    merged["versions"] = sorted([*merged["versions"], entry.get("version")])
                merged["error"] = merged["error"] or entry.get("error")
    return out
