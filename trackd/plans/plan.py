"""A tracking plan: what it says (parsed and checked from its file) and judging a message by it.

`load(path)` reads and checks a plan (PlanError, one line with the file, line and field, on
anything wrong) and compiles every schema once. `Plan.judge(message)` runs on the request
path for each message of a source with a plan: None when the message keeps the plan (the
common case, nothing allocated), else a `Judgement` listing the violations with the action
each gets. Offending fields are removed from the message in place when their action is omit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trackd.errors import PlanError
from trackd.log import records as log_records
from trackd.plans import document
from trackd.plans.document import Document, Path_, dotted
from trackd.plans.schema import (
    UNPLANNED_EVENT,
    UNPLANNED_PROPERTY,
    Found,
    Rule,
    compile_schema,
    schema_problems,
)

ALLOW, FLAG, OMIT, BLOCK = "allow", "flag", "omit", "block"
CONTROLS = {
    "unplanned_events": (ALLOW, FLAG, BLOCK),
    "unplanned_properties": (ALLOW, FLAG, OMIT, BLOCK),
    "violations": (FLAG, OMIT, BLOCK),
}
DEFAULT_CONTROL = FLAG
_TOP = {"name", "version", "description", "controls", "events", "identify", "group", "pages",
        "screens", "common"}
_NAMED = {"description", "properties"}  # an event, a page or a screen
_TRAITS = {"description", "traits"}  # identify, group
# Where a call's name is.
_NAME_OF = {"track": "event", "page": "name", "screen": "name"}


@dataclass(frozen=True, slots=True)
class Violation:
    """A violation with the action it got (`allow`ed kinds are never reported)."""

    kind: str
    path: str
    rule: str
    message: str
    action: str


@dataclass(slots=True)
class Judgement:
    """What a plan found in one message. `blocked` is the first violation that blocks."""

    violations: list[Violation]
    blocked: Violation | None
    event: str | None
    version: int

    @property
    def reason(self) -> str:
        """The refusal's reason when the message is blocked."""
        first = self.blocked or self.violations[0]
        return f"tracking plan: {first.kind} at {first.path}"

    def records(self, source: str, message_id: str | None, received_at: str,
                message_type: str) -> list[log_records.Violation]:
        """The violations as log records, written in the message's commit."""
        return [log_records.Violation(source, message_id, received_at, message_type,
                                      self.event, v.kind, v.path, v.rule, v.message,
                                      self.version, v.action) for v in self.violations]


class Plan:
    """A loaded, compiled plan."""

    def __init__(self, doc: Document) -> None:
        data = doc.data
        self.file = doc.file
        self.name = str(data.get("name") or Path(doc.file).stem)
        self.version: int = data["version"]
        controls = data.get("controls") or {}
        self.controls: dict[str, str] = {key: str(controls.get(key, DEFAULT_CONTROL))
                                         for key in CONTROLS}
        self._event_action = self.controls["unplanned_events"]
        self._property_action = self.controls["unplanned_properties"]
        self._violation_action = self.controls["violations"]
        self._unplanned = self._property_action != ALLOW
        # call type -> (name -> rule or None (any payload)), or None: the call is not planned
        self._named: dict[str, dict[str, Rule | None] | None] = {
            "track": _compile_map(doc, data, "events"),
            "page": _compile_map(doc, data, "pages"),
            "screen": _compile_map(doc, data, "screens")}
        self._traits = {kind: _compile(doc, (kind, "traits"), data[kind].get("traits"))
                        for kind in ("identify", "group") if isinstance(data.get(kind), dict)}
        common = _compile(doc, ("common",), data.get("common"))
        self._common = None if common is None else common.as_common()

    @property
    def events(self) -> list[str]:
        return sorted(self._named["track"] or ())

    def judge(self, message: dict[str, Any]) -> Judgement | None:
        """The violations of one valid message (its `type` is known), None when it has none.
        Fields whose violation is omitted are removed from `message`."""
        kind = message["type"]
        found: list[Found] | None = None
        name: str | None = None
        if kind in _NAME_OF:
            name = message.get(_NAME_OF[kind])
            name = name if isinstance(name, str) else None
            named = self._named[kind]
            if named is not None:
                key = name or ""
                if key in named or (kind != "track" and "*" in named):
                    rule = named[key] if key in named else named["*"]
                    if rule is not None:
                        found = rule.check(message.get("properties", {}), ("properties",),
                                           self._unplanned) or None
                elif self._event_action != ALLOW:
                    found = [Found(UNPLANNED_EVENT, (_NAME_OF[kind],),
                                   "events" if kind == "track" else f"{kind}s",
                                   f"{name!r} is not in the plan")]
        elif kind in self._traits:
            rule = self._traits[kind]
            if rule is not None:
                found = rule.check(message.get("traits", {}), ("traits",),
                                   self._unplanned) or None
        if self._common is not None:
            more = self._common.check(message, (), self._unplanned)
            if more:
                found = [*(found or ()), *more]
        if found is None:
            return None
        return self._decide(message, found, name)

    def _decide(self, message: dict[str, Any], found: list[Found],
                name: str | None) -> Judgement | None:
        violations: list[Violation] = []
        blocked: Violation | None = None
        omitted: list[Path_] = []
        for item in found:
            action = self._action_of(item.kind)
            if action == ALLOW:
                continue
            if action == OMIT:
                if _removable(message, item.path):
                    omitted.append(item.path)
                else:
                    action = FLAG  # nothing to remove (a missing field, the message itself)
            violation = Violation(item.kind, dotted(item.path), item.rule, item.message, action)
            if action == BLOCK and blocked is None:
                blocked = violation
            violations.append(violation)
        if not violations:
            return None
        if blocked is None:
            for path in sorted(omitted, key=len, reverse=True):
                _remove(message, path)
        return Judgement(violations, blocked, name, self.version)

    def _action_of(self, kind: str) -> str:
        if kind == UNPLANNED_EVENT:
            return self._event_action
        if kind == UNPLANNED_PROPERTY:
            return self._property_action
        return self._violation_action


def load(path: Path, *, shown_as: str | None = None) -> Plan:
    """Read, check and compile the plan at `path`; PlanError (one line) when it is broken."""
    doc = document.read(path, shown_as=shown_as)
    lint(doc)
    return Plan(doc)


def lint(doc: Document) -> None:
    """Check the plan's structure, controls and schemas; PlanError at the first problem."""
    found = problems(doc)
    if found:
        raise found[0]


def problems(doc: Document) -> list[PlanError]:
    """Every problem of the plan (its structure, controls and schemas), in file order: each
    names its line and field. A part that is broken is not looked into further (a schema
    that is not a mapping has no keywords to check), its neighbours are."""
    found: list[PlanError] = list(doc.problems)
    data = doc.data
    found += _known_keys(doc, (), data, _TOP)
    version = data.get("version")
    if "version" not in data:
        found.append(doc.error((), "version: missing (an integer, recorded on every violation)"))
    elif isinstance(version, bool) or not isinstance(version, int) or version < 0:
        found.append(doc.error(("version",), f"must be a whole number, got {version!r}"))
    if "name" in data and not isinstance(data["name"], str):
        found.append(doc.error(("name",), "must be a string"))
    controls = data.get("controls") or {}
    if not isinstance(controls, dict):
        found.append(doc.error(("controls",), "must be a mapping"))
        controls = {}
    found += _known_keys(doc, ("controls",), controls, set(CONTROLS))
    for key, value in controls.items():
        if key in CONTROLS and value not in CONTROLS[key]:
            found.append(doc.error(("controls", key), f"unknown value {value!r}: use one of "
                                   f"{', '.join(CONTROLS[key])}"))
    for section in ("events", "pages", "screens"):
        entries = data.get(section)
        if entries is None:
            continue
        if not isinstance(entries, dict):
            found.append(doc.error((section,), "must be a mapping of names to entries"))
            continue
        for name, entry in entries.items():
            at: Path_ = (section, name)
            if entry is None:
                continue
            if not isinstance(entry, dict):
                found.append(doc.error(at, "must be a mapping (description, properties)"))
                continue
            found += _known_keys(doc, at, entry, _NAMED)
            if "properties" in entry:
                found += schema_problems(doc, (*at, "properties"), entry["properties"])
    for section in ("identify", "group"):
        entry = data.get(section)
        if entry is None:
            continue
        if not isinstance(entry, dict):
            found.append(doc.error((section,), "must be a mapping (description, traits)"))
            continue
        found += _known_keys(doc, (section,), entry, _TRAITS)
        if "traits" in entry:
            found += schema_problems(doc, (section, "traits"), entry["traits"])
    if data.get("common") is not None:
        found += schema_problems(doc, ("common",), data["common"])
    return sorted(found, key=lambda error: error.line)


def _known_keys(doc: Document, at: Path_, data: dict[str, Any],
                known: Iterable[str]) -> list[PlanError]:
    return [doc.error((*at, key), f"unknown key (expected one of {', '.join(sorted(known))})")
            for key in data if key not in known]


def _compile_map(doc: Document, data: dict[str, Any],
                 section: str) -> dict[str, Rule | None] | None:
    entries = data.get(section)
    if not isinstance(entries, dict):
        return None
    return {name: _compile(doc, (section, name, "properties"), (entry or {}).get("properties"))
            for name, entry in entries.items()}


def _compile(doc: Document, at: Path_, schema: Any) -> Rule | None:
    return None if schema is None else compile_schema(doc, at, schema)


def _removable(message: dict[str, Any], path: Path_) -> bool:
    """Only a field inside a top-level object can be omitted (not userId, not `properties`)."""
    if len(path) < 2:
        return False
    parent: Any = message
    for key in path[:-1]:
        try:
            parent = parent[key]
        except (KeyError, IndexError, TypeError):
            return False
    return isinstance(parent, dict) and path[-1] in parent


def _remove(message: dict[str, Any], path: Path_) -> None:
    parent: Any = message
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict):
        parent.pop(path[-1], None)
