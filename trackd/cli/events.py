"""`events show` in words: a one-line summary and a line per stage of a where-is answer.

The answer is the document of GET /api/v1/events/{messageId} (trackd.admin.lookup.where_is);
stages it does not know (added later) still get their lines from their `found` flag.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

COLUMNS = ["stage", "state", "source", "where", "at", "detail"]
_KNOWN = {"messageId", "accepted", "quarantined", "message", "found", "warehouse",
          "destinations"}


def _describe(message: dict[str, Any]) -> str:
    kind = str(message.get("type", "message"))
    name = message.get("event") if kind == "track" else message.get("name")
    who = message.get("userId") or message.get("anonymousId")
    text = kind + (f" {name!r}" if name else "")
    return text + (f" of {who!r}" if who else "")


def summary(answer: dict[str, Any]) -> str:
    """e.g. `track 'Button Clicked' of 'user123' from source app, received 2026-...:
    loaded into app.tracks, app.button_clicked; delivered to hook.`"""
    accepted = answer.get("accepted") or []
    quarantined = answer.get("quarantined") or []
    if not accepted:
        if quarantined:
            first = quarantined[0]
            return (f"Refused at {first['receivedAt']} (source {first['source']}): "
                    f"{first['reason']}")
        return f"Not found: {answer.get('messageId')}"
    first = accepted[0]
    what = _describe(answer.get("message") or {"type": first.get("type")})
    parts: list[str] = []
    warehouse = answer.get("warehouse")
    if isinstance(warehouse, dict):
        tables = [f"{row['schema']}.{row['table']}" for row in warehouse.get("loaded", [])]
        if tables:
            parts.append("loaded into " + ", ".join(tables))
        elif warehouse.get("duplicates"):
            parts.append("a duplicate of an earlier message (not loaded again)")
        elif warehouse.get("failed"):
            parts.append("failed to load: " + str(warehouse["failed"][0].get("error")))
        else:
            parts.append("not in the warehouse yet")
    deliveries = (answer.get("destinations") or {}).get("deliveries", [])
    by_state: dict[str, list[str]] = {}
    for row in deliveries:
        by_state.setdefault(str(row.get("state")), []).append(str(row.get("destination")))
    verbs = {"delivered": "delivered to", "retrying": "retrying", "dead": "dead-lettered at",
             "skipped": "skipped by", "pending": "waiting for"}
    parts += [f"{verbs.get(state, state)} {', '.join(names)}"
              for state, names in by_state.items()]
    extra = f" (and {len(accepted) - 1} more time(s))" if len(accepted) > 1 else ""
    return (f"{what} from source {first['source']}, received {first['receivedAt']}{extra}"
            + (": " + "; ".join(parts) if parts else "") + ".")


def stage_rows(answer: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    rows: list[list[Any]] = []
    for a in answer.get("accepted") or []:
        log = a.get("log") or {}
        where = f"{log['shard']}:{log['offset']}" if log else ""
        rows.append(["log", "accepted", a.get("source"), where, a.get("receivedAt"),
                     a.get("type")])
    for q in answer.get("quarantined") or []:
        rows.append(["gateway", "quarantined", q.get("source"), f"batch item {q['batchIndex']}"
                     if q.get("batchIndex") is not None else "", q.get("receivedAt"),
                     q.get("reason")])
    warehouse = answer.get("warehouse")
    if isinstance(warehouse, dict):
        for w in warehouse.get("loaded", []):
            rows.append(["warehouse", "loaded", w["schema"], f"{w['schema']}.{w['table']}",
                         w.get("loadedAt"), ""])
        for d in warehouse.get("duplicates", []):
            rows.append(["warehouse", "duplicate", d["schema"], "", d.get("seenAt"),
                         f"duplicate of the message received {d['duplicateOf']['receivedAt']}"])
        for f in warehouse.get("failed", []):
            rows.append(["warehouse", "failed", f["schema"], "", f.get("failedAt"),
                         f.get("error")])
    for d in (answer.get("destinations") or {}).get("deliveries", []):
        at = d.get("deliveredAt") or d.get("deadAt") or d.get("nextTry") or ""
        detail = d.get("error") or d.get("reason") or (
            f"HTTP {d['status']}" if d.get("status") else "")
        if d.get("in") == "log":
            detail = "not read from the log yet"
        rows.append(["destination", d.get("state"), d.get("source"), d.get("destination"), at,
                     detail])
    for name, part in answer.items():
        if name not in _KNOWN and isinstance(part, dict):
            rows.append([name, "found" if part.get("found") else "not found", "", "", "", ""])
    return list(COLUMNS), rows


def lookup_command(message_id: str, config_path: str | None, data_dir: str | None) -> str:
    """`trackd events show ID` as the running command was typed (program, --config,
    --data-dir), ready to paste."""
    typed, here = Path(sys.argv[0]), Path.cwd()
    on_path = shutil.which("trackd")
    if on_path is not None and Path(on_path).resolve() == typed.resolve():
        typed = Path("trackd")
    elif typed.is_absolute() and typed.is_relative_to(here):  # as the README types it
        typed = typed.relative_to(here)
    program = ([str(typed)] if typed.name == "trackd" else
               [sys.executable, "-m", "trackd"] if typed.name == "__main__.py" else ["trackd"])
    words = [*program, "events", "show", message_id]
    if config_path:
        words += ["--config", config_path]
    if data_dir:
        words += ["--data-dir", data_dir]
    return " ".join(shell_quote(w) for w in words)


def shell_quote(text: str) -> str:
    """`text` as one shell word: shlex's quoting, or bash's $'...' when it holds control
    characters (a CR or a tab pasted raw would not survive the terminal)."""
    if text.isprintable():
        return shlex.quote(text)
    escaped = "".join(_ESCAPES.get(ch) or (ch if ch.isprintable() else f"\\x{ord(ch):02x}"
                      if ord(ch) < 0x100 else f"\\u{ord(ch):04x}") for ch in text)
    return f"$'{escaped}'"


_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
