"""Pieces of the console's pages rendered from stage answers: the lookup's timeline, the
destinations table, a refused message shown without its write key."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from trackd.console import html
from trackd.console.html import e, when

if TYPE_CHECKING:
    from trackd.console.service import Console


def without_key(text: str) -> str:
    try:
        doc = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text
    if isinstance(doc, dict) and "writeKey" in doc:
        doc.pop("writeKey")
        return msgspec.json.encode(doc).decode()
    return text


def lookup_box(message_id: str) -> str:
    return ('<form class="filters" method="get" action="/console/events">'
            f'<label>messageId <input name="id" value="{e(message_id)}" size="40" required>'
            '</label><button type="submit">Find</button></form>')


def destination_table(rows: list[dict[str, Any]]) -> str:
    return html.table(
        ["Destination", "Health", "Delivered", "Retrying", "Dead letters", "Behind",
         "Last error"],
        [[f'<a href="/console/destinations">{e(d["name"])}</a>',
          f'<span class="{"ok" if d["health"] == "healthy" else "bad"}">{e(d["health"])}</span>',
          html.count(d["delivered"]), html.count(d["retrying"]),
          html.count(d["dead"]),
          f'{html.count(d["lag"]["messages"], "msgs")}, {html.duration(d["lag"]["seconds"])}',
          (f'{e(d["lastError"]["error"])} ({when(d["lastError"]["at"])})'
           if d["lastError"] else "—")] for d in rows],
        empty="No destinations configured: add a [[destinations]] table to trackd.toml to "
              "forward messages to webhooks or a Segment-compatible API.",
        numeric=(2, 3, 4))


def timeline(answer: dict[str, Any], console: Console) -> str:
    steps: list[str] = []

    def step(ok: bool | None, title: str, detail: str = "") -> None:
        mark = {True: "ok", False: "bad", None: "wait"}[ok]
        steps.append(f'<li class="{mark}"><b>{title}</b> {detail}</li>')

    for a in answer["accepted"]:
        where = a.get("log")
        detail = (f"in the log (shard {e(where['shard'])}, offset {e(where['offset'])})"
                  if where else "")
        step(True, f"Accepted by source {e(a['source'])}",
             f"{e(a['type'])} at {when(a['receivedAt'])} {detail}")
    for q in answer["quarantined"]:
        step(False, f"Refused for source {e(q['source'])}",
             f"at {when(q['receivedAt'])}: {e(q['reason'])}")
    warehouse = answer.get("warehouse")
    if warehouse is not None:
        for d in warehouse.get("duplicates", []):
            step(True, "Deduplicated", f"a repeat received at {when(d['receivedAt'])} was "
                 "dropped (already loaded)")
        for t in warehouse.get("loaded", []):
            step(True, f"Loaded into <code>{e(t['schema'])}.{e(t['table'])}</code>",
                 f"at {when(t['loadedAt'])}")
        for f in warehouse.get("failed", []):
            step(False, "Failed to load", f"{e(f['error'])} at {when(f['failedAt'])}")
        if answer["accepted"] and not warehouse.get("loaded") and not warehouse.get("failed"):
            step(None, "Not in the warehouse yet", e(warehouse.get("note", "")))
    for d in (answer.get("destinations") or {}).get("deliveries", []):
        state = d["state"]
        ok = {"delivered": True, "dead": False}.get(state)
        extra = ", ".join(f"{e(k)} {when(v) if k.endswith(('At', 'Try')) else e(v)}"
                          for k, v in d.items()
                          if k not in ("destination", "source", "state") and v is not None)
        step(ok, f"Destination {e(d['destination'])}: {e(state)}", extra)
    message = answer.get("message")
    json_block = html.pretty(message) if message is not None else ""
    masked = console.live.mask(json_block.encode()).decode("utf-8", "replace")
    return f'<ol class="timeline">{"".join(steps)}</ol>{masked}'
