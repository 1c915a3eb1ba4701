// The watch page's player: through the viewer's own engine when one answers at config.engine (the engine's
// /webui/api/service?method=get_version, with CORS), playing its /ace/manifest.m3u8; else the broadcaster's HLS
// origin (config.hls); else it says why it cannot play (config.reason). The playing itself is the engine's
// player page script (player.js: hls.js, live sync, recovery), loaded once the playlist is known.
// window.swarmcastWatch: {mode: "engine"|"hls"|"none", manifest, engineVersion, probeError, engineError}.
"use strict";
(function () {
  const sc = window.swarmcast;
  const box = document.getElementById("watch");
  const video = document.getElementById("video");
  const sourceLine = document.getElementById("source");
  const cfg = sc.config(box);
  const state = (window.swarmcastWatch = { mode: null, manifest: null, engineVersion: null, probeError: null, engineError: null });

  async function probe() {
    try {
      const answer = await sc.getJson(`${cfg.engine}/webui/api/service?method=get_version`, 3000);
      return answer && answer.result ? String(answer.result.version) : null;
    } catch (error) {
      state.probeError = String(error);
      return null;
    }
  }

  function play(manifest) {
    state.manifest = manifest;
    video.dataset.manifest = manifest;
    const script = document.createElement("script");
    script.src = "/static/player.js";
    document.body.appendChild(script);
  }

  // The engine refuses a playlist with a JSON error (a transport file it cannot fetch, a broadcast that does not
  // start): hls.js only sees the status, so on each new refusal the page reads the reason (the engine lets it:
  // http/cors.py) and shows it.
  let explained = 0;
  async function explain() {
    const player = window.swarmcastPlayer;
    const refused = player ? player.errors.filter((e) => e.code >= 400).length : 0;
    if (refused === explained) return;
    explained = refused;
    try {
      const response = await fetch(state.manifest, { cache: "no-store" });
      if (response.ok) return;
      const answer = await response.json();
      state.engineError = String(answer.error);
      sourceLine.textContent = `your engine at ${cfg.engine} cannot play it: ${state.engineError} ·`;
    } catch (error) {
      state.engineError = String(error);
    }
  }

  async function start() {
    const version = await probe();
    if (version !== null) {
      state.mode = "engine";
      state.engineVersion = version;
      sourceLine.textContent = `through your engine at ${cfg.engine} (swarmcast ${version}) ·`;
      play(`${cfg.engine}/ace/manifest.m3u8?${new URLSearchParams(cfg.query).toString()}`);
      setInterval(explain, 2000);
    } else if (cfg.hls) {
      state.mode = "hls";
      sourceLine.textContent = `no local engine at ${cfg.engine}: from the broadcaster's HLS ·`;
      play(cfg.hls);
    } else {
      state.mode = "none";
      sourceLine.textContent = cfg.reason;
      video.remove();
      document.getElementById("unmute").remove();
    }
  }
  start();
})();
