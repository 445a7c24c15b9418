"""Running counts kept as messages arrive: volume per source, and the schema catalogue.

A sink of `LogTail`. Counting reads the frames' metadata (source, receipt time, call types);
only track messages are decoded, for their event name (a decoder that skips every other
member). Shapes are sampled: per call type and event, at most `sample_per_minute` messages a
minute have their properties (or traits) walked for JSON types, presence, conflicts and
sample values; presence is a share of the sampled messages. So the console's pages read a
few dictionaries instead of scanning the warehouse, whatever its size.

Bounded whatever write keys send: at most MAX_EVENTS call type/event pairs (later ones are
counted under "(other events)") and MAX_PROPERTIES properties per event. Kept in
`<data_dir>/console/counts.json` (written every few seconds, private to the user) with the
tail's positions, so a restart neither forgets nor counts twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from trackd.log.tail import Flag, Frame, Refusal

MAX_EVENTS = 2000
MAX_PROPERTIES = 200
MAX_SAMPLES = 3
OTHER_EVENTS = "(other events)"
MINUTES_KEPT = 24 * 60
HOURS_KEPT = 7 * 24


class _Event(msgspec.Struct):
    event: Any = None


_decode_event = msgspec.json.Decoder(_Event).decode


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def flatten(values: dict[str, Any], prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """Nested objects as dotted paths (three levels deep; deeper ones stay objects)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and depth < 2:
            out.update(flatten(value, path + ".", depth + 1))
        else:
            out[path] = value
    return out


def _minute(at: str) -> str:
    return at[:16]


def _hour(at: str) -> str:
    return at[:13]


class Counts:
    def __init__(self, path: Path | None, *, sample_per_minute: int = 20) -> None:
        self.path = path
        self.sample_per_minute = sample_per_minute
        self._lock = threading.Lock()
        # source -> minute ("YYYY-MM-DDTHH:MM") or hour ("YYYY-MM-DDTHH") -> [accepted, refused]
        self.minutes: dict[str, dict[str, list[int]]] = {}
        self.hours: dict[str, dict[str, list[int]]] = {}
        # "source\ttype\tevent" -> stats (see _event)
        self.events: dict[str, dict[str, Any]] = {}
        # "source\tevent\tkind" -> tracking plan violations (see _violations)
        self.violations: dict[str, dict[str, Any]] = {}
        self.positions: dict[str, dict[str, int]] = {"frames": {}, "refusals": {},
                                                     "violations": {}}
        self._dirty = False
        if path is not None and path.is_file():
            with contextlib.suppress(OSError, ValueError):
                doc = json.loads(path.read_text())
                self.minutes, self.hours = doc["minutes"], doc["hours"]
                self.events, self.positions = doc["events"], doc["positions"]
                self.violations = doc.get("violations", {})
                self.positions.setdefault("violations", {})

    # -- counting (the tail's thread) ------------------------------------------------------
    def add(self, frames: Sequence[Frame], refusals: Sequence[Refusal],
            flags: Sequence[Flag] = ()) -> None:
        with self._lock:
            for frame in frames:
                self._volume(frame.source, frame.received_at, len(frame.types), 0)
                self._catalogue(frame)
                self.positions["frames"][frame.shard] = frame.seq
            for refusal in refusals:
                self._volume(refusal.source, refusal.received_at, 0, 1)
                self.positions["refusals"][refusal.shard] = refusal.id
            for flag in flags:
                self._violation(flag)
                self.positions["violations"][flag.shard] = flag.id
            self._dirty = True

    def _violation(self, flag: Flag) -> None:
        v = flag.record
        event = v.event or ""
        key = f"{v.source}\t{event}\t{v.violation}"
        group = self.violations.get(key)
        if group is None and len(self.violations) >= MAX_EVENTS:
            event = OTHER_EVENTS
            key = f"{v.source}\t{event}\t{v.violation}"
            group = self.violations.get(key)
        if group is None:
            group = self.violations[key] = {
                "source": v.source, "type": v.type, "event": event, "kind": v.violation,
                "total": 0, "minutes": {}, "hours": {}, "lastSeen": v.received_at,
                "samples": []}
        group["total"] += 1
        for buckets, at in ((group["minutes"], _minute(v.received_at)),
                            (group["hours"], _hour(v.received_at))):
            buckets[at] = buckets.get(at, 0) + 1
        group["lastSeen"] = max(group["lastSeen"], v.received_at)
        samples: list[dict[str, Any]] = group["samples"]
        samples.insert(0, {"messageId": v.message_id, "receivedAt": v.received_at,
                           "path": v.path, "message": v.message[:200], "action": v.action})
        del samples[MAX_SAMPLES:]

    def _volume(self, source: str, at: str, accepted: int, refused: int) -> None:
        for buckets, key in ((self.minutes, _minute(at)), (self.hours, _hour(at))):
            row = buckets.setdefault(source, {}).setdefault(key, [0, 0])
            row[0] += accepted
            row[1] += refused

    def _catalogue(self, frame: Frame) -> None:
        bodies = frame.messages()
        minute = _minute(frame.received_at)
        for kind, body, message_id in zip(frame.types, bodies, frame.message_ids, strict=False):
            event = ""
            if kind == "track":
                try:
                    name = _decode_event(body).event
                except msgspec.DecodeError:
                    name = None
                event = name if isinstance(name, str) else ""
            stats = self._event(frame.source, kind, event, frame.received_at)
            stats["total"] += 1
            hours = stats["hours"]
            hour = _hour(frame.received_at)
            hours[hour] = hours.get(hour, 0) + 1
            stats["lastSeen"] = frame.received_at
            if stats["sampleMinute"] != minute:
                stats["sampleMinute"], stats["sampledThisMinute"] = minute, 0
            if stats["sampledThisMinute"] < self.sample_per_minute:
                stats["sampledThisMinute"] += 1
                self._shape(stats, kind, body, message_id)

    def _event(self, source: str, kind: str, event: str, at: str) -> dict[str, Any]:
        key = f"{source}\t{kind}\t{event}"
        stats = self.events.get(key)
        if stats is None:
            if len(self.events) >= MAX_EVENTS:
                key = f"{source}\t{kind}\t{OTHER_EVENTS}"
                stats = self.events.get(key)
                event = OTHER_EVENTS
            if stats is None:
                stats = self.events[key] = {
                    "source": source, "type": kind, "event": event, "total": 0, "hours": {},
                    "firstSeen": at, "lastSeen": at, "sampled": 0, "sampleMinute": "",
                    "sampledThisMinute": 0, "properties": {}}
        return stats

    def _shape(self, stats: dict[str, Any], kind: str, body: bytes, message_id: str) -> None:
        try:
            message = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return
        if not isinstance(message, dict):
            return
        values = message.get("traits" if kind in ("identify", "group") else "properties")
        stats["sampled"] += 1
        if not isinstance(values, dict):
            return
        properties: dict[str, Any] = stats["properties"]
        for path, value in flatten(values).items():
            prop = properties.get(path)
            if prop is None:
                if len(properties) >= MAX_PROPERTIES:
                    continue
                prop = properties[path] = {"types": {}, "present": 0, "samples": []}
            kind_of = json_type(value)
            prop["types"][kind_of] = prop["types"].get(kind_of, 0) + 1
            prop["present"] += 1
            if value is not None and len(prop["samples"]) < MAX_SAMPLES:
                text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
                text = text[:80]
                if all(s["value"] != text for s in prop["samples"]):
                    prop["samples"].append({"value": text, "messageId": message_id})

    # -- reading (the admin app's thread) --------------------------------------------------
    def volume(self, by: str, now: datetime) -> dict[str, Any]:
        """Per source, accepted and refused per minute for the last hour (by="minute") or per
        hour for the last 7 days (by="hour"); oldest first, with the first bucket's start."""
        step = timedelta(minutes=1) if by == "minute" else timedelta(hours=1)
        count = 60 if by == "minute" else HOURS_KEPT
        end = now.replace(second=0, microsecond=0)
        if by != "minute":
            end = end.replace(minute=0)
        starts = [end - step * (count - 1 - i) for i in range(count)]
        width = 16 if by == "minute" else 13
        keys = [s.strftime("%Y-%m-%dT%H:%M")[:width] for s in starts]
        buckets = self.minutes if by == "minute" else self.hours
        series: dict[str, dict[str, list[int]]] = {}
        with self._lock:
            for source, rows in sorted(buckets.items()):
                series[source] = {"accepted": [rows.get(k, [0, 0])[0] for k in keys],
                                  "refused": [rows.get(k, [0, 0])[1] for k in keys]}
        return {"by": by, "start": starts[0].strftime("%Y-%m-%dT%H:%M:00Z"),
                "stepSeconds": int(step.total_seconds()), "series": series}

    def totals(self, now: datetime) -> dict[str, dict[str, dict[str, int]]]:
        """Per source: accepted and refused over the last hour and day."""
        hour_ago = _minute((now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
        day_ago = _minute((now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"))
        out: dict[str, dict[str, dict[str, int]]] = {}
        with self._lock:
            for source, rows in self.minutes.items():
                totals = {"hour": [0, 0], "day": [0, 0]}
                for key, (accepted, refused) in rows.items():
                    if key > day_ago:
                        totals["day"][0] += accepted
                        totals["day"][1] += refused
                    if key > hour_ago:
                        totals["hour"][0] += accepted
                        totals["hour"][1] += refused
                out[source] = {"accepted": {"hour": totals["hour"][0], "day": totals["day"][0]},
                               "refused": {"hour": totals["hour"][1], "day": totals["day"][1]}}
        return out

    def catalogue(self, now: datetime, source: str | None = None) -> list[dict[str, Any]]:
        """Every call type and event name with counts (24 h, 7 days, all) and first/last seen."""
        day_ago = _hour((now - timedelta(hours=23)).strftime("%Y-%m-%dT%H"))
        out: list[dict[str, Any]] = []
        with self._lock:
            for stats in self.events.values():
                if source is not None and stats["source"] != source:
                    continue
                hours: dict[str, int] = stats["hours"]
                out.append({"source": stats["source"], "type": stats["type"],
                            "event": stats["event"] or None,
                            "counts": {"day": sum(n for h, n in hours.items() if h >= day_ago),
                                       "week": sum(hours.values()), "all": stats["total"]},
                            "firstSeen": stats["firstSeen"], "lastSeen": stats["lastSeen"],
                            "properties": len(stats["properties"])})
        out.sort(key=lambda e: (e["source"], -e["counts"]["all"], e["type"], e["event"] or ""))
        return out

    def properties(self, source: str, kind: str, event: str | None) -> dict[str, Any] | None:
        """One event's properties (traits): types seen, share present, conflicts, samples."""
        with self._lock:
            stats = self.events.get(f"{source}\t{kind}\t{event or ''}")
            if stats is None:
                return None
            sampled = max(1, stats["sampled"])
            rows = []
            for path, prop in sorted(stats["properties"].items()):
                kinds = {("number" if k == "integer" else k) for k in prop["types"] if k != "null"}
                rows.append({"name": path, "types": dict(prop["types"]),
                             "presence": round(prop["present"] / sampled, 4),
                             "conflict": len(kinds) > 1, "samples": list(prop["samples"])})
            return {"source": source, "type": kind, "event": event or None,
                    "sampled": stats["sampled"], "total": stats["total"], "properties": rows}

    def violation_groups(self, now: datetime,
                         source: str | None = None) -> list[dict[str, Any]]:
        """Violations per source, event and kind: counts over 1 hour, 24 hours and 7 days
        (and since counting began), the newest few as samples; most in the last day first."""
        hour_ago = _minute((now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
        day_ago = _minute((now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"))
        week_ago = _hour((now - timedelta(days=7)).strftime("%Y-%m-%dT%H"))
        out: list[dict[str, Any]] = []
        with self._lock:
            for group in self.violations.values():
                if source is not None and group["source"] != source:
                    continue
                minutes: dict[str, int] = group["minutes"]
                out.append({
                    "source": group["source"], "type": group["type"],
                    "event": group["event"] or None, "kind": group["kind"],
                    "counts": {"hour": sum(n for m, n in minutes.items() if m > hour_ago),
                               "day": sum(n for m, n in minutes.items() if m > day_ago),
                               "week": sum(n for h, n in group["hours"].items()
                                           if h > week_ago),
                               "all": group["total"]},
                    "lastSeen": group["lastSeen"], "samples": list(group["samples"])})
        out.sort(key=lambda g: (-g["counts"]["day"], -g["counts"]["all"], g["source"],
                                g["event"] or "", g["kind"]))
        return out

    # -- keeping -----------------------------------------------------------------------------
    def prune(self, now: datetime) -> None:
        """Forget minutes older than a day and hours older than 7 days."""
        oldest_minute = _minute((now - timedelta(minutes=MINUTES_KEPT)).strftime(
            "%Y-%m-%dT%H:%M"))
        oldest_hour = _hour((now - timedelta(hours=HOURS_KEPT)).strftime("%Y-%m-%dT%H"))
        with self._lock:
            for rows in (*self.minutes.values(), *(v["minutes"] for v in
                                                  self.violations.values())):
                for key in [k for k in rows if k < oldest_minute]:
                    del rows[key]
            for buckets in (*self.hours.values(), *(e["hours"] for e in self.events.values()),
                            *(v["hours"] for v in self.violations.values())):
                for key in [k for k in buckets if k < oldest_hour]:
                    del buckets[key]

    def forget(self, matches: Callable[[bytes], bool]) -> int:
        """Drop every sample (a value, a message's summary) whose JSON text `matches`: a
        privacy deletion. Saved at once; returns how many went."""
        def walk(node: Any) -> int:
            gone = 0
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "samples" and isinstance(value, list):
                        kept = [v for v in value if not matches(json.dumps(v).encode())]
                        gone += len(value) - len(kept)
                        value[:] = kept
                    else:
                        gone += walk(value)
            return gone

        with self._lock:
            gone = walk(self.events) + walk(self.violations)
            self._dirty = self._dirty or bool(gone)
        if gone:
            self.save()
        return gone

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        self.prune(datetime.now(UTC))
        with self._lock:
            text = json.dumps({"minutes": self.minutes, "hours": self.hours,
                               "events": self.events, "violations": self.violations,
                               "positions": self.positions})
            self._dirty = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        partial.replace(self.path)
