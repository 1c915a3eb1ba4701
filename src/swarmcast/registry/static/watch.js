// The watch page's player: through the viewer's own engine when one answers at config.engine (the engine's
// /webui/api/service?method=get_version, with CORS), playing its /ace/manifest.m3u8; else the broadcaster's HLS
// origin (config.hls); else it says why it cannot play (config.reason). The playing itself is the engine's
// player page script (player.js: hls.js, live sync, recovery), loaded once the playlist is known.
// window.swarmcastWatch: {mode: "engine"|"hls"|"none", manifest, engineVersion, probeError}.
"use strict";
(function () {
  const sc = window.swarmcast;
  const box = document.getElementById("watch");
  const video = document.getElementById("video");
  const sourceLine = document.getElementById("source");
  const cfg = sc.config(box);
  const state = (window.swarmcastWatch = { mode: null, manifest: null, engineVersion: null, probeError: null });

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

  async function start() {
    const version = await probe();
    if (version !== null) {
      state.mode = "engine";
      state.engineVersion = version;
      sourceLine.textContent = `through your engine at ${cfg.engine} (swarmcast ${version}) ·`;
      play(`${cfg.engine}/ace/manifest.m3u8?${new URLSearchParams(cfg.query).toString()}`);
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
