"""The console: a web UI on the tracking port, served by the pipeline process's admin app.

Modules: `service` (the `Console`: what runs, and its routes), `counts` (running counts:
volume per source, the schema catalogue), `live` (the SSE stream and its subscribers),
`session` (the login cookie, CSRF tokens), `access` (what the admin guard lets through with a
session), `destinations` (health, dead letters, replay), `api` (the JSON endpoints), `html`,
`fragments` and `pages` (the server-rendered pages), `static/` (CSS, JavaScript, vendored uPlot).

Its data comes from `trackd.log.tail` (a non-committing tail of the log). The composition
root builds one `service.Console` when `server.console` is true, adds its `routes()` to the
admin app and gives its `access` to the admin guard.
"""
