"""HTML of the console's pages: one layout, escaped values, numbers with their units.

Pages are rendered here on the server; `static/console.js` adds what needs a browser (times
in the viewer's zone and relative, the live stream, the chart, copying).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any
from urllib.parse import quote

NAV = (("/console/", "Overview"), ("/console/live", "Live"), ("/console/events", "Lookup"),
       ("/console/schema", "Schema"), ("/console/violations", "Violations"),
       ("/console/quarantine", "Quarantine"),
       ("/console/destinations", "Destinations"), ("/console/query", "Query"))
FIRST_EVENT = ("curl -u 'YOUR_WRITE_KEY:' -H 'Content-Type: application/json' \\\n"
               "  -d '{\"userId\":\"user123\",\"event\":\"Button Clicked\","
               "\"properties\":{\"plan\":\"pro\"}}' \\\n  {base}/v1/track")


def e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def url(value: object) -> str:
    return quote(str(value), safe="")


def count(n: int | float, unit: str = "") -> str:
    text = f"{int(n):,}"
    if unit and int(n) == 1 and unit.endswith("s"):
        unit = unit[:-1]  # 1 msg, 1 row
    return f"{text} {unit}" if unit else text


def size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms" if seconds else "0 s"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def when(iso: str | None) -> str:
    """A time the browser shows in the viewer's zone, relative ("12 s ago")."""
    if not iso:
        return "—"
    return f'<time datetime="{e(iso)}">{e(iso)}</time>'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, empty: str,
          numeric: Sequence[int] = ()) -> str:
    """A table of already escaped cells; `empty` (HTML) when there is no row."""
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{c}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    if not body:
        return f'<p class="empty">{empty}</p>'
    head = "".join(f'<th{" class=num" if i in numeric else ""} scope="col">{e(h)}</th>'
                   for i, h in enumerate(headers))
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>' \
           '</table></div>'


def error_line(message: str) -> str:
    return f'<p class="error" role="alert">{e(message)}</p>'


def first_event(base: str) -> str:
    return ('<div class="empty"><p>No messages yet. Send a first event with the write key of '
            'one of your sources (in <code>trackd.toml</code>, or printed by '
            '<code>trackd serve</code>):</p>'
            '<pre class="cmd">' + e(FIRST_EVENT).replace(
                "{base}", f'<span data-origin>{e(base)}</span>') + '</pre></div>')


def csrf_field(token: str | None) -> str:
    return f'<input type="hidden" name="csrf" value="{e(token)}">' if token else ""


def options(values: Iterable[str], selected: str | None, *, blank: str) -> str:
    out = [f'<option value="">{e(blank)}</option>']
    for value in values:
        chosen = " selected" if value == selected else ""
        out.append(f'<option value="{e(value)}"{chosen}>{e(value)}</option>')
    return "".join(out)


def source_picker(source_names: Iterable[str], source: str | None) -> str:
    """A form choosing one source (or all) that submits on change."""
    return ('<form class="filters"><label>Source <select name="source" '
            'onchange="this.form.submit()">'
            f'{options(source_names, source, blank="all")}</select></label>'
            '<noscript><button>Show</button></noscript></form>')


def page(title: str, body: str, *, active: str = "", csrf: str | None = None,
         scripts: Sequence[str] = (), head: str = "") -> str:
    links = "".join(
        f'<a href="{href}"{" aria-current=page" if href == active else ""}>{e(name)}</a>'
        for href, name in NAV)
    logout = (f'<form method="post" action="/console/logout" class="logout">{csrf_field(csrf)}'
              '<button type="submit">Log out</button></form>') if csrf else ""
    tags = "".join(f'<script src="/console/static/{name}" defer></script>' for name in scripts)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{e(title)} · trackd</title>'
        '<link rel="icon" href="data:,"><link rel="stylesheet" href="/console/static/console.css">'
        f'<meta name="csrf-token" content="{e(csrf or "")}">{head}</head><body>'
        f'<header><a class="brand" href="/console/">trackd</a><nav>{links}</nav>{logout}'
        f'</header><main><h1>{e(title)}</h1>{body}</main>'
        f'<script src="/console/static/console.js" defer></script>{tags}</body></html>')


def bare(title: str, body: str) -> str:
    """A page without navigation (the login)."""
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{e(title)} · trackd</title>'
            '<link rel="stylesheet" href="/console/static/console.css"></head>'
            f'<body class="bare"><main>{body}</main></body></html>')


def pretty(value: Any) -> str:
    import json

    return f'<pre class="json">{e(json.dumps(value, indent=2, default=str))}</pre>'
