// Live charts (uPlot) from the registry's series: /api/series (the whole network, or one stream with content_id)
// and /api/nodes/<id>/series (CPU, memory, traffic of a node). Every config.refresh seconds the data is read again
// and each chart's setData() redrawn; a chart whose series change (a node came or went) is built anew.
// window.swarmcastDashboard: {updates, error, points: {chart: data length}, plots: {chart: uPlot}}.
"use strict";
(function () {
  const sc = window.swarmcast;
  const box = document.getElementById("charts");
  const statusLine = document.getElementById("charts-status");
  const cfg = sc.config(box);
  const refresh = Math.max(0.5, Number(cfg.refresh) || 5);
  const seconds = Math.max(10, Number(cfg.seconds) || 900);
  const MAX_NODES = 8; // nodes drawn in the CPU and memory charts (the busiest first would need more reads)
  const colours = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
  const state = (window.swarmcastDashboard = { updates: 0, error: null, points: {}, plots: {} });
  const mib = (v) => (v == null ? null : v / 1048576);

  // chart id -> [label, series key, transform] of the network/stream series
  const streamCharts = {
    viewers: [["viewers", "viewers"]],
    upload: [["broadcaster (source + support nodes)", "broadcaster_upload_bps"], ["viewers", "viewer_upload_bps"]],
    delay: [["delay behind live (s)", "delay_s"]],
    startup: [["startup (s)", "startup_s"]],
    stalls: [["stalls", "stalls"]],
  };
  const nodeCharts = {
    cpu: [["CPU %", "cpu_percent"]],
    memory: [["RSS MiB", "rss_bytes", mib]],
    traffic: [["upload", "upload_bps"], ["download", "download_bps"]],
  };
  const bpsAxis = (_u, values) => values.map((v) => sc.bps(v));

  function draw(name, labels, data) {
    const place = document.getElementById(`chart-${name}`);
    if (!place) return;
    let plot = state.plots[name];
    const key = labels.join("\u0000");
    if (plot && plot.swarmcastKey !== key) {
      plot.destroy();
      plot = null;
    }
    if (!plot) {
      const bits = name === "upload" || name === "traffic";
      plot = new window.uPlot({
        width: 480,
        height: 200,
        series: [{}, ...labels.map((label, i) => ({ label, stroke: colours[i % colours.length], width: 1.5, spanGaps: true }))],
        axes: [{}, bits ? { values: bpsAxis, size: 80 } : {}],
        scales: { x: { time: true } },
      }, data, place);
      plot.swarmcastKey = key;
      state.plots[name] = plot;
    } else {
      plot.setData(data);
    }
    state.points[name] = data[0].length;
  }

  function columns(series, spec) {
    const t = Array.isArray(series.t) ? series.t : [];
    return [t, ...spec.map(([, field, f]) => {
      const values = Array.isArray(series[field]) ? series[field] : [];
      return t.map((_x, i) => (values[i] == null ? null : f ? f(values[i]) : values[i]));
    })];
  }

  async function nodesToChart() {
    const answer = await sc.getJson("/api/nodes");
    return answer.nodes.filter((n) => n.state === "live" &&
      (cfg.scope !== "stream" || (n.content_ids || []).includes(cfg.content_id))).slice(0, MAX_NODES);
  }

  async function perNodeCharts(nodes) {
    const tables = await Promise.all(nodes.map((n) =>
      sc.getJson(`/api/nodes/${encodeURIComponent(n.node_id)}/series?seconds=${seconds}`)));
    const labels = nodes.map((n) => `${n.role} ${n.name || n.node_id.slice(0, 8)}`);
    for (const [name, [[, field, f]]] of [["cpu", nodeCharts.cpu], ["memory", nodeCharts.memory]]) {
      const aligned = tables.map((s) => columns(s, [["", field, f]]));
      const data = aligned.length ? window.uPlot.join(aligned) : [[]];
      draw(name, labels, data);
    }
  }

  async function update() {
    try {
      if (cfg.scope === "node") {
        const series = await sc.getJson(`/api/nodes/${encodeURIComponent(cfg.node_id)}/series?seconds=${seconds}`);
        for (const [name, spec] of Object.entries(nodeCharts)) draw(name, spec.map((s) => s[0]), columns(series, spec));
      } else {
        const query = new URLSearchParams({ seconds: String(seconds) });
        if (cfg.scope === "stream") query.set("content_id", cfg.content_id);
        const series = await sc.getJson(`/api/series?${query}`);
        for (const [name, spec] of Object.entries(streamCharts)) draw(name, spec.map((s) => s[0]), columns(series, spec));
        if (document.getElementById("chart-cpu")) await perNodeCharts(await nodesToChart());
      }
      state.updates += 1;
      state.error = null;
      statusLine.textContent = `updated ${new Date().toLocaleTimeString()} (every ${refresh} s)`;
    } catch (error) {
      state.error = String(error);
      statusLine.textContent = `cannot refresh the charts: ${error}`;
    }
  }
  // The next read is timed from the end of this one: a slow registry is never asked twice at once.
  (async function loop() {
    await update();
    setTimeout(loop, refresh * 1000);
  })();
})();
