// trackd console: what every page needs in the browser: local and relative times.
"use strict";
window.trackd = (function () {
  const fmt = new Intl.DateTimeFormat(undefined, {dateStyle: "medium", timeStyle: "medium"});
  function ago(date) {
    const s = Math.round((Date.now() - date.getTime()) / 1000);
    if (s < 0) return "in the future";
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 172800) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " days ago";
  }
  const short = new Intl.DateTimeFormat(undefined, {hour: "2-digit", minute: "2-digit",
                                                   second: "2-digit", hour12: false});
  function show(el) {
    const date = new Date(el.getAttribute("datetime"));
    if (isNaN(date)) return;
    if (el.dataset.short !== undefined) {
      el.textContent = short.format(date) + "." + String(date.getMilliseconds()).padStart(3, "0");
      el.title = fmt.format(date) + " (" + ago(date) + ")";
      return;
    }
    el.textContent = fmt.format(date) + " (" + ago(date) + ")";
    el.title = date.toISOString();
  }
  function refresh(root) { (root || document).querySelectorAll("time[datetime]").forEach(show); }
  document.addEventListener("DOMContentLoaded", () => {
    refresh();
    // the address this page was loaded from, in the curl lines of empty states
    document.querySelectorAll("[data-origin]").forEach((el) => { el.textContent = location.origin; });
  });
  setInterval(refresh, 5000);
  function time(iso, brief) {
    const el = document.createElement("time");
    if (brief) el.dataset.short = "";
    el.setAttribute("datetime", iso);
    el.textContent = iso;
    show(el);
    return el;
  }
  function csrf() { return document.querySelector('meta[name="csrf-token"]').content; }
  return {ago, time, refresh, csrf};
})();
