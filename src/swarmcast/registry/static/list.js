// The stream list: rebuilt from /api/streams every data-refresh seconds (viewer counts, live, nodes), rows made
// with createElement/textContent. window.swarmcastList tells people and tests how the refreshes went.
"use strict";
(function () {
  const sc = window.swarmcast;
  const table = document.getElementById("streams");
  const tbody = table.querySelector("tbody");
  const statusLine = document.getElementById("list-status");
  const refresh = Math.max(0.5, Number(table.dataset.refresh) || 5);
  const state = (window.swarmcastList = { updates: 0, streams: tbody.rows.length, error: null });
  const roles = ["source", "support", "start", "engine"];

  function row(stream) {
    const tr = document.createElement("tr");
    tr.dataset.contentId = stream.content_id;
    const key = encodeURIComponent(stream.name || stream.content_id);
    sc.link(sc.cell(tr, "", "title"), `/streams/${key}`, String(stream.title));
    sc.cell(tr, String(stream.name), "name");
    sc.cell(tr, Array.isArray(stream.categories) ? stream.categories.join(", ") : "", "categories");
    sc.cell(tr, stream.quality == null ? "–" : String(stream.quality), "quality");
    sc.cell(tr, sc.bps(stream.bitrate), "bitrate");
    sc.cell(tr, stream.live ? "live" : "off air", "live");
    sc.cell(tr, String(stream.viewers || 0), "viewers");
    const nodes = stream.nodes || {};
    sc.cell(tr, roles.map((r) => `${nodes[r] || 0} ${r}`).join(" · "), "nodes");
    sc.link(sc.cell(tr, ""), `/watch/${key}`, "watch", "watch");
    return tr;
  }

  async function update() {
    try {
      const answer = await sc.getJson("/api/streams");
      const rows = answer.streams.map(row);
      tbody.replaceChildren(...rows);
      state.updates += 1;
      state.streams = rows.length;
      state.error = null;
      statusLine.textContent = rows.length ? `updated ${new Date().toLocaleTimeString()}` : "no streams are registered";
    } catch (error) {
      state.error = String(error);
      statusLine.textContent = `cannot refresh: ${error}`;
    }
  }
  // The next read is timed from the end of this one: a slow registry is never asked twice at once.
  (async function loop() {
    await update();
    setTimeout(loop, refresh * 1000);
  })();
})();
