// The live view: messages from GET /api/v1/live (server-sent events), newest on top.
"use strict";
(function () {
  const MAX_ROWS = 500;
  const form = document.getElementById("filters");
  const body = document.querySelector("#live-table tbody");
  const state = document.getElementById("live-state");
  const empty = document.getElementById("live-empty");
  const pauseButton = document.getElementById("pause");
  const detail = document.getElementById("detail");
  let source = null, paused = false, held = [], shown = 0, dropped = 0, selected = null;

  function status(text) { state.textContent = text; }
  function counts() {
    status((paused ? "paused" : "live") + " · " + shown.toLocaleString() + " shown" +
           (held.length ? " · " + held.length.toLocaleString() + " waiting" : "") +
           (dropped ? " · " + dropped.toLocaleString() + " dropped (too fast to show)" : ""));
  }
  function cell(row, text) {
    const td = document.createElement("td");
    if (text instanceof Node) td.appendChild(text); else td.textContent = text || "";
    row.appendChild(td);
  }
  function add(item) {
    const row = document.createElement("tr");
    row.className = item.status;
    const m = item.message && typeof item.message === "object" ? item.message : {};
    cell(row, trackd.time(item.receivedAt, true));
    cell(row, item.status);
    cell(row, item.source);
    cell(row, item.type);
    cell(row, m.event || m.name || "");
    cell(row, m.userId || m.anonymousId || "");
    cell(row, item.reason || "");
    row.tabIndex = 0;
    row.addEventListener("click", () => open(item, row));
    row.addEventListener("keydown", (ev) => { if (ev.key === "Enter") open(item, row); });
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
    empty.hidden = true;
    shown++;
  }
  function open(item, row) {
    if (selected) selected.classList.remove("sel");
    selected = row;
    row.classList.add("sel");
    document.getElementById("detail-title").textContent =
      item.status + " · " + (item.messageId || "no messageId");
    document.getElementById("detail-json").textContent = JSON.stringify(item, null, 2);
    const link = document.getElementById("detail-link");
    link.hidden = !item.messageId;
    link.href = "/console/events/" + encodeURIComponent(item.messageId || "");
    detail.hidden = false;
  }
  document.getElementById("close").addEventListener("click", () => { detail.hidden = true; });
  document.getElementById("copy").addEventListener("click", async (ev) => {
    const text = document.getElementById("detail-json").textContent;
    try { await navigator.clipboard.writeText(text); ev.target.textContent = "Copied"; }
    catch (err) { ev.target.textContent = "Select and copy"; }
    setTimeout(() => { ev.target.textContent = "Copy JSON"; }, 1500);
  });
  pauseButton.addEventListener("click", () => {
    paused = !paused;
    pauseButton.textContent = paused ? "Resume" : "Pause";
    pauseButton.setAttribute("aria-pressed", String(paused));
    if (!paused) { held.forEach(add); held = []; }
    counts();
  });
  function connect() {
    if (source) source.close();
    const params = new URLSearchParams();
    new FormData(form).forEach((value, key) => { if (value) params.set(key, value); });
    const query = params.toString();
    history.replaceState(null, "", query ? "?" + query : location.pathname);
    source = new EventSource("/api/v1/live?" + params.toString());
    source.onopen = counts;
    source.onmessage = (ev) => {
      const item = JSON.parse(ev.data);
      if (paused) { if (held.length < 5000) held.push(item); else dropped++; }
      else add(item);
      counts();
    };
    source.onerror = () => status("disconnected: reconnecting… (is the server running? are " +
                                  "you still logged in?)");
  }
  // ": dropped N" comments are not events; the server's count is in trackd_live_dropped_total.
  form.addEventListener("change", connect);
  form.addEventListener("submit", (ev) => { ev.preventDefault(); connect(); });
  connect();
})();
