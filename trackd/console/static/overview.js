// The overview's volume chart (uPlot): accepted per source and refused, per minute or hour.
"use strict";
(function () {
  const box = document.getElementById("volume");
  const colors = ["#2457d6", "#18794e", "#8a4bd8", "#d97706", "#0e7490", "#be185d"];
  let chart = null;
  async function load(by) {
    let doc;
    try {
      const response = await fetch("/api/v1/volume?by=" + by, {credentials: "same-origin"});
      if (!response.ok) throw new Error("the server answered " + response.status);
      doc = await response.json();
    } catch (err) {
      box.innerHTML = '<p class="error" role="alert"></p>';
      box.firstChild.textContent = "Could not load the volume: " + err.message;
      return;
    }
    const start = Date.parse(doc.start) / 1000;
    const sources = Object.keys(doc.series);
    const n = sources.length ? doc.series[sources[0]].accepted.length : 0;
    const xs = Array.from({length: n}, (_, i) => start + i * doc.stepSeconds);
    const data = [xs];
    const series = [{}];
    sources.forEach((name, i) => {
      data.push(doc.series[name].accepted);
      series.push({label: name + " accepted", stroke: colors[i % colors.length], width: 2,
                   value: (u, v) => v == null ? "" : v.toLocaleString() + " msgs"});
    });
    data.push(xs.map((_, i) => sources.reduce((sum, s) => sum + doc.series[s].refused[i], 0)));
    series.push({label: "refused", stroke: "#c2253a", width: 1.5, dash: [4, 4],
                 value: (u, v) => v == null ? "" : v.toLocaleString() + " msgs"});
    const opts = {width: Math.max(300, box.clientWidth), height: 240, series,
                  axes: [{}, {label: "messages per " + by, size: 60}],
                  scales: {x: {time: true}}};
    if (chart) chart.destroy();
    box.innerHTML = "";
    chart = new uPlot(opts, data, box);
  }
  document.querySelectorAll(".switch button").forEach((button) => {
    button.addEventListener("click", () => {
      document.querySelectorAll(".switch button").forEach(
        (b) => b.setAttribute("aria-pressed", String(b === button)));
      load(button.dataset.by);
    });
  });
  load("minute");
  setInterval(() => {
    const pressed = document.querySelector('.switch button[aria-pressed="true"]');
    load(pressed ? pressed.dataset.by : "minute");
  }, 30000);
})();
