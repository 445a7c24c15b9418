"""The console's pages, rendered on the server from the same data as the JSON endpoints."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from trackd.admin.lookup import where_is_live
from trackd.admin.throttle import AUTH_FAILED
from trackd.console import html
from trackd.console.access import cookie_of
from trackd.console.api import overview
from trackd.console.fragments import destination_table, lookup_box, timeline, without_key
from trackd.console.html import e, url, when
from trackd.console.live import STATUSES
from trackd.console.violations import violations_body
from trackd.errors import QueryRefused
from trackd.settings import ServerSettings

if TYPE_CHECKING:
    from trackd.console.service import Console

STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".md": "text/plain",
                ".LICENSE": "text/plain"}
QUERY_ROWS = 1000
DEFAULT_SQL = ("SELECT table_schema, table_name FROM information_schema.tables\n"
               "WHERE table_schema NOT IN ('_trackd', 'information_schema', 'pg_catalog')\n"
               "ORDER BY 1, 2")


def _page(request: Request, title: str, body: str, active: str, *,
          scripts: tuple[str, ...] = (), head: str = "") -> HTMLResponse:
    csrf = getattr(request.state, "csrf", None)
    return HTMLResponse(html.page(title, body, active=active, csrf=csrf, scripts=scripts,
                                  head=head),
                        headers={"cache-control": "no-store"})


def _base(server: ServerSettings) -> str:
    """The tracking API's address as configured (the browser puts in the one it used)."""
    host = "127.0.0.1" if server.host in ("0.0.0.0", "::") else server.host
    return f"http://{host}:{server.port or 8088}"


def page_routes(console: Console) -> list[Route]:
    pipeline = console.pipeline
    sessions = console.sessions
    source_names = [s.name for s in pipeline.settings.sources]

    # -- login -------------------------------------------------------------------------------
    async def root(request: Request) -> Response:
        return RedirectResponse("/console/", status_code=302)

    def login_form(message: str = "", next_path: str = "/console/") -> str:
        return html.bare("Log in", (
            '<form method="post" action="/console/login" class="login">'
            '<h1>trackd console</h1>'
            f'{html.error_line(message) if message else ""}'
            '<label for="token">Admin token</label>'
            '<input id="token" name="token" type="password" autocomplete="current-password" '
            'required autofocus>'
            f'<input type="hidden" name="next" value="{e(next_path)}">'
            '<button type="submit">Log in</button>'
            '<p class="hint">The admin token is <code>server.admin_token</code> in '
            '<code>trackd.toml</code>, or the one <code>trackd serve</code> printed when it '
            'generated it. A write key does not log in.</p></form>'))

    async def login(request: Request) -> Response:
        next_path = request.query_params.get("next", "/console/")
        if request.method == "GET":
            return HTMLResponse(login_form(next_path=next_path))
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode(
            "utf-8", "replace")).items()}
        token = form.get("token", "")
        next_path = form.get("next") or "/console/"
        if not next_path.startswith("/console/") or next_path.startswith("//"):
            next_path = "/console/"
        if not sessions.token_ok(token):
            failed = request.scope.get("state", {}).get(AUTH_FAILED)
            if failed is not None:  # the admin API's per-client throttle: 429 beyond
                failed()
            return HTMLResponse(login_form("That is not the admin token.", next_path),
                                status_code=401)
        secure = request.headers.get("x-forwarded-proto") == "https"
        response = RedirectResponse(next_path, status_code=303)
        response.headers.append("set-cookie", sessions.cookie_header(sessions.issue(),
                                                                       secure=secure))
        return response

    async def logout(request: Request) -> Response:
        await asyncio.to_thread(sessions.revoke, cookie_of(request.scope))
        response = RedirectResponse("/console/login", status_code=303)
        secure = request.headers.get("x-forwarded-proto") == "https"
        response.headers.append("set-cookie", sessions.clear_header(secure=secure))
        return response

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        folder = resources.files("trackd.console").joinpath("static")
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts):
            return Response("not found", status_code=404)
        target = folder.joinpath(*parts)
        if not target.is_file():
            return Response("not found", status_code=404)
        suffix = "." + name.rsplit(".", 1)[-1]
        return Response(target.read_bytes(), media_type=STATIC_TYPES.get(suffix, "text/plain"),
                        headers={"cache-control": "public, max-age=3600"})

    # -- overview --------------------------------------------------------------------------
    async def home(request: Request) -> Response:
        doc = await asyncio.to_thread(overview, console)
        received = sum(s["accepted"]["day"] + s["refused"]["day"] for s in doc["sources"])
        cards = (
            f'<div class="cards"><div><span>Version</span><b>{e(doc["version"])}</b></div>'
            f'<div><span>Up for</span><b>{html.duration(doc["uptimeSeconds"])}</b></div>'
            f'<div><span>Pipeline</span><b>{e(doc["state"])}</b></div>'
            f'<div><span>Data directory</span><b>{html.size(doc["disk"]["dataBytes"])}</b>'
            f'</div><div><span>Free disk</span><b>{html.size(doc["disk"]["freeBytes"])}</b>'
            '</div></div>')
        sources = html.table(
            ["Source", "Accepted, last hour", "Refused, last hour", "Accepted, 24 h",
             "Refused, 24 h"],
            [[f'<a href="/console/live?source={url(s["name"])}">{e(s["name"])}</a>',
              html.count(s["accepted"]["hour"], "msgs"), html.count(s["refused"]["hour"], "msgs"),
              html.count(s["accepted"]["day"], "msgs"), html.count(s["refused"]["day"], "msgs")]
             for s in doc["sources"]], empty="No sources configured.", numeric=(1, 2, 3, 4))
        chart = ('<section><h2>Volume <span class="switch" role="group" aria-label="period">'
                 '<button type="button" data-by="minute" aria-pressed="true">last hour</button>'
                 '<button type="button" data-by="hour" aria-pressed="false">7 days</button>'
                 '</span></h2><div id="volume" class="chart" aria-label="messages per minute">'
                 '</div></section>')
        lags = html.table(
            ["Consumer", "State", "Behind", "Oldest waiting"],
            [[e(c["consumer"]), e(c["state"]), html.count(c["messages"], "msgs"),
              html.duration(c["seconds"])] for c in doc["lag"]],
            empty="No stage reads the log.", numeric=(2, 3))
        body = (cards + ("" if received else html.first_event(_base(pipeline.settings.server)))
                + f"<section><h2>Sources</h2>{sources}</section>{chart}"
                + f"<section><h2>Pipeline lag</h2>{lags}</section>"
                + f"<section><h2>Destinations</h2>{destination_table(doc['destinations'])}"
                + "</section>")
        return _page(request, "Overview", body, "/console/",
                     scripts=("vendor/uPlot.iife.min.js", "overview.js"),
                     head='<link rel="stylesheet" href="/console/static/vendor/uPlot.min.css">')

    # -- live ------------------------------------------------------------------------------
    async def live(request: Request) -> Response:
        params = request.query_params
        types = ("track", "identify", "page", "screen", "group", "alias")
        waiting = html.first_event(_base(pipeline.settings.server)).replace("No messages yet",
                                                           "Waiting for messages")
        body = (
            '<form id="filters" class="filters">'
            f'<label>Source <select name="source">'
            f'{html.options(source_names, params.get("source"), blank="all")}</select></label>'
            f'<label>Type <select name="type">'
            f'{html.options(types, params.get("type"), blank="all")}</select></label>'
            f'<label>Event <input name="event" value="{e(params.get("event"))}"></label>'
            f'<label>User or anonymous id <input name="user_id" '
            f'value="{e(params.get("user_id"))}"></label>'
            f'<label>Text <input name="q" type="search" value="{e(params.get("q"))}"></label>'
            f'<label>Status <select name="status">'
            f'{html.options(STATUSES, params.get("status"), blank="all")}'
            '</select></label>'
            '<button type="button" id="pause" aria-pressed="false">Pause</button>'
            '<span id="live-state" role="status">connecting…</span></form>'
            '<div class="split"><div class="scroll"><table id="live-table"><thead><tr>'
            '<th scope="col">Received</th><th scope="col">Status</th><th scope="col">Source'
            '</th><th scope="col">Type</th><th scope="col">Event</th><th scope="col">User</th>'
            '<th scope="col">Reason</th></tr></thead><tbody></tbody></table>'
            f'<div id="live-empty">{waiting}'
            '</div></div>'
            '<aside id="detail" hidden><div class="detail-head"><b id="detail-title"></b>'
            '<button type="button" id="copy">Copy JSON</button>'
            '<a id="detail-link" href="#">Where is it now?</a>'
            '<button type="button" id="close" aria-label="Close">×</button></div>'
            '<pre id="detail-json" class="json"></pre></aside></div>')
        return _page(request, "Live", body, "/console/live", scripts=("live.js",))

    # -- lookup ----------------------------------------------------------------------------
    async def lookup_form(request: Request) -> Response:
        message_id = request.query_params.get("id", "").strip()
        if message_id:
            return RedirectResponse(f"/console/events/{url(message_id)}", status_code=303)
        return _page(request, "Where is my event", lookup_box(""), "/console/events")

    async def lookup(request: Request) -> Response:
        message_id = request.path_params["message_id"]
        answer = await where_is_live(message_id, pipeline.source, pipeline.lookups)
        body = lookup_box(message_id) + (
            timeline(answer, console) if answer["found"] else
            html.error_line(f"No message with messageId {message_id} was found: not in the "
                            "log, the quarantine, the warehouse or any destination's ledger."))
        return _page(request, "Where is my event", body, "/console/events")

    # -- schema ----------------------------------------------------------------------------
    async def schema(request: Request) -> Response:
        source = request.query_params.get("source") or None
        events = console.counts.catalogue(datetime.now(UTC), source)
        picker = html.source_picker(source_names, source)
        rows = []
        for ev in events:
            link = "/console/schema/event?" + urlencode(
                {"source": ev["source"], "type": ev["type"], "event": ev["event"] or ""})
            rows.append([e(ev["source"]), e(ev["type"]),
                         f'<a href="{e(link)}">{e(ev["event"] or "(" + ev["type"] + ")")}</a>',
                         html.count(ev["counts"]["day"]), html.count(ev["counts"]["week"]),
                         html.count(ev["counts"]["all"]), html.count(ev["properties"]),
                         when(ev["firstSeen"]), when(ev["lastSeen"])])
        body = picker + html.table(
            ["Source", "Type", "Event", "24 h", "7 days", "All", "Properties", "First seen",
             "Last seen"], rows, numeric=(3, 4, 5, 6),
            empty="No messages seen yet: the catalogue fills as messages arrive.")
        return _page(request, "Schema", body, "/console/schema")

    async def schema_event(request: Request) -> Response:
        params = request.query_params
        source, kind = params.get("source", ""), params.get("type", "")
        found = console.counts.properties(source, kind, params.get("event") or None)
        if found is None:
            body = html.error_line("This source has not sent that event (or it was renamed).")
            missing = _page(request, "Schema", body, "/console/schema")
            missing.status_code = 404
            return missing
        title = found["event"] or f"({kind})"
        rows = []
        for prop in found["properties"]:
            types = ", ".join(f"{e(t)} ({html.count(n)})" for t, n in prop["types"].items())
            samples = " ".join(
                f'<a class="sample" href="/console/events/{url(s["messageId"])}">'
                f'{e(s["value"])}</a>' for s in prop["samples"])
            rows.append([f"<code>{e(prop['name'])}</code>", types,
                         f'{prop["presence"] * 100:.0f} %',
                         '<span class="bad">type conflict</span>' if prop["conflict"] else "",
                         samples])
        what = "traits" if kind in ("identify", "group") else "properties"
        body = (f'<p><a href="/console/schema?source={url(source)}">← {e(source)}</a> · '
                f'{e(kind)} <b>{e(title)}</b>: {html.count(found["total"], "messages")}, '
                f'{what} from {html.count(found["sampled"], "sampled")}.</p>'
                + html.table(["Name", "JSON types seen", "Present in", "Conflicts",
                              "Sample values"], rows, numeric=(2,),
                             empty=f"Its messages carry no {what}."))
        return _page(request, f"Schema: {title}", body, "/console/schema")

    # -- quarantine ------------------------------------------------------------------------
    async def violations(request: Request) -> Response:
        body = violations_body(console, request.query_params.get("source") or None,
                               source_names)
        return _page(request, "Violations", body, "/console/violations")

    async def quarantine(request: Request) -> Response:
        source = request.query_params.get("source") or None
        reason = (request.query_params.get("reason") or "").strip()
        rows = await pipeline.source.quarantined(source=source, limit=1000)
        if reason:
            rows = [r for r in rows if reason.lower() in str(r["reason"]).lower()]
        form = ('<form class="filters"><label>Source <select name="source">'
                f'{html.options(source_names, source, blank="all")}</select></label>'
                f'<label>Reason contains <input name="reason" value="{e(reason)}"></label>'
                '<button type="submit">Filter</button></form>')
        cells = []
        for r in rows[:200]:
            body_text = console.live.mask(str(r["body"]).encode()).decode("utf-8", "replace")
            mid = r["messageId"]
            cells.append([when(str(r["receivedAt"])), e(r["source"]),
                          f'<span class="bad">{e(r["reason"])}</span>',
                          f'<a href="/console/events/{url(mid)}">{e(mid)}</a>' if mid else "—",
                          f'<code class="clip">{e(without_key(body_text)[:300])}</code>'])
        table = html.table(["Received", "Source", "Reason", "messageId", "Message"], cells,
                           empty="Nothing refused: every message sent so far was accepted.")
        shown = f'<p class="hint">{html.count(len(rows), "refused messages")} match' + (
            " (the newest 200 shown)" if len(rows) > 200 else "") + ".</p>" if rows else ""
        return _page(request, "Quarantine", form + shown + table, "/console/quarantine")

    # -- destinations ----------------------------------------------------------------------
    async def destinations(request: Request) -> Response:
        view = console.destinations
        summary = await asyncio.to_thread(view.summary, 50)
        note = request.query_params.get("replayed")
        body = (f'<p class="notice" role="status">{e(note)}</p>' if note else "")
        body += destination_table(summary)
        csrf = getattr(request.state, "csrf", None)
        for dest in summary:
            rows = [[when(d["deadAt"]), e(d["source"]), e(d["event"] or d["type"]),
                     f'<a href="/console/events/{url(d["messageId"])}">{e(d["messageId"])}</a>',
                     html.count(d["attempts"]), f'<span class="bad">{e(d["error"])}</span>']
                    for d in dest.pop("deadLetters")]
            action = (f'<form method="post" action="/console/destinations/{url(dest["name"])}'
                      f'/replay">{html.csrf_field(csrf)}<button type="submit">Replay '
                      f'{html.count(dest["dead"])} dead letters</button></form>'
                      if dest["dead"] else "")
            body += (f'<section><h2>{e(dest["name"])}: dead letters</h2>{action}'
                     + html.table(["Dead since", "Source", "Event", "messageId", "Attempts",
                                   "Last error"], rows, numeric=(4,),
                                  empty="No dead letters.") + "</section>")
        return _page(request, "Destinations", body, "/console/destinations")

    async def replay(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in console.destinations.workers:
            missing = _page(request, "Destinations", html.error_line(
                f"No destination named {name}."), "/console/destinations")
            missing.status_code = 404
            return missing
        summary = await console.destinations.replay(name)
        return RedirectResponse("/console/destinations?" + urlencode(
            {"replayed": summary.line()}), status_code=303)

    # -- query -----------------------------------------------------------------------------
    async def query(request: Request) -> Response:
        sql = request.query_params.get("sql", "")
        result = ""
        if sql.strip():
            try:
                columns, rows = await _run(sql)
            except QueryRefused as exc:
                result = html.error_line(str(exc))
            else:
                csv_link = "/console/query.csv?" + urlencode({"sql": sql})
                cut = f" (the first {QUERY_ROWS:,})" if len(rows) >= QUERY_ROWS else ""
                result = (f'<p class="hint">{html.count(len(rows), "rows")}{cut}'
                          f' · <a href="{e(csv_link)}" download>Download CSV</a></p>'
                          + html.table(columns, ([e("NULL" if v is None else v) for v in row]
                                                 for row in rows), empty="No rows."))
        body = ('<form class="query" method="get" action="/console/query">'
                '<label for="sql">Read-only SQL over the warehouse (DuckDB)</label>'
                f'<textarea id="sql" name="sql" rows="6" spellcheck="false">'
                f'{e(sql or DEFAULT_SQL)}</textarea><button type="submit">Run</button></form>'
                + result)
        return _page(request, "Query", body, "/console/query")

    async def query_csv(request: Request) -> Response:
        try:
            columns, rows = await _run(request.query_params.get("sql", ""), limit=100_000)
        except QueryRefused as exc:
            return Response(str(exc) + "\n", status_code=400, media_type="text/plain")
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows(["" if v is None else v for v in row] for row in rows)
        return Response(out.getvalue(), media_type="text/csv", headers={
            "content-disposition": 'attachment; filename="trackd-query.csv"'})

    async def _run(sql: str, limit: int = QUERY_ROWS) -> tuple[list[str], list[Any]]:
        engine = pipeline.query_engine
        if engine is None:
            raise QueryRefused("the warehouse is disabled (warehouse.enabled = false)")
        if not sql.strip():
            raise QueryRefused("no SQL statement given")
        result = await engine.run(sql, limit=limit)  # on the queries' own pool
        return result.columns, list(result.rows)

    return [
        Route("/", root, methods=["GET"]),
        Route("/console", root, methods=["GET"]),
        Route("/console/login", login, methods=["GET", "POST"]),
        Route("/console/logout", logout, methods=["GET", "POST"]),
        Route("/console/static/{name:path}", static, methods=["GET"]),
        Route("/console/", home, methods=["GET"]),
        Route("/console/live", live, methods=["GET"]),
        Route("/console/events", lookup_form, methods=["GET"]),
        Route("/console/events/{message_id:path}", lookup, methods=["GET"]),
        Route("/console/schema", schema, methods=["GET"]),
        Route("/console/schema/event", schema_event, methods=["GET"]),
        Route("/console/violations", violations, methods=["GET"]),
        Route("/console/quarantine", quarantine, methods=["GET"]),
        Route("/console/destinations", destinations, methods=["GET"]),
        Route("/console/destinations/{name}/replay", replay, methods=["POST"]),
        Route("/console/query", query, methods=["GET"]),
        Route("/console/query.csv", query_csv, methods=["GET"]),
    ]

