"""The tracking plans of a server's sources: loaded at start-up, reloaded on SIGHUP.

`SourcePlans.by_source` is the dict the gateway reads (source name -> Plan); a reload replaces
its entries one by one (the event loop's thread does it between requests, so a request sees
one plan or the other, never half of one). A plan that no longer loads keeps the previous one:
the error is logged and kept in `errors`.
"""

from __future__ import annotations

from pathlib import Path

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
