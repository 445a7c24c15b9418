"""The violations page: tracking plan violations grouped by source, event and kind.

Read from the console's running counts (`Counts.violation_groups`, fed by the log's
`violations` table through the tail), never from a warehouse scan: counts over the last hour,
day and 7 days, and the newest few of each group as samples linking to their messages.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from trackd.console import html
from trackd.console.html import e, url, when

if TYPE_CHECKING:
    from trackd.console.service import Console

EMPTY = ("No tracking plan violations seen yet. Sources with a <code>tracking_plan</code> "
         "report here what breaks it; see the live view with status “violation” as they "
         "arrive.")


def violations_body(console: Console, source: str | None, source_names: list[str]) -> str:
    """The page's HTML body (escaped) for one source or all."""
    groups = console.counts.violation_groups(datetime.now(UTC), source)
    picker = html.source_picker(source_names, source)
    rows = []
    for group in groups:
        samples = "".join(
            f'<li><code>{e(s["path"])}</code> {e(s["message"])} '
            + (f'<a href="/console/events/{url(s["messageId"])}">{e(s["messageId"])}</a>'
               if s["messageId"] else "") + f' ({e(s["action"])})</li>'
            for s in group["samples"])
        rows.append([e(group["source"]), e(group["event"] or "(" + group["type"] + ")"),
                     f'<span class="bad">{e(group["kind"])}</span>',
                     html.count(group["counts"]["hour"]), html.count(group["counts"]["day"]),
                     html.count(group["counts"]["week"]), when(group["lastSeen"]),
                     f'<ul class="samples">{samples}</ul>'])
    return picker + html.table(
        ["Source", "Event", "Violation", "1 h", "24 h", "7 days", "Last seen", "Samples"],
        rows, numeric=(3, 4, 5), empty=EMPTY)
