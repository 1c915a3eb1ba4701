// swarmcast's live player page: hls.js on the <video> whose data-manifest names the playlist.
// Records what happened in window.swarmcastPlayer (errors, recoveries, latency) for people and for tests.
"use strict";
(function () {
  const video = document.getElementById("video");
  const statusLine = document.getElementById("status");
  const manifest = video.dataset.manifest;
  const state = (window.swarmcastPlayer = { errors: [], fatal: 0, recoveries: 0, latency: null, hls: null });
  // A short break (the engine or the origin away for a few seconds) is ridden out by retries, not an error page.
  const retry = { maxNumRetry: 8, retryDelayMs: 1000, maxRetryDelayMs: 4000 };
  const policy = (ms) => ({ default: { maxTimeToFirstByteMs: ms, maxLoadTimeMs: ms, timeoutRetry: retry, errorRetry: retry } });

  function start() {
    if (window.Hls && window.Hls.isSupported()) {
      const hls = new window.Hls({
        liveSyncDurationCount: 3, // start and stay three segments behind the live edge (hls.js's default)
        liveMaxLatencyDurationCount: 10, // further behind than that (after a stall): jump back to the sync point
        maxLiveSyncPlaybackRate: 1.1, // or catch up by playing slightly faster
        manifestLoadPolicy: policy(20000), // the engine may wait ~8 s for the first segment of a cold broadcast
        playlistLoadPolicy: policy(20000),
        fragLoadPolicy: policy(20000),
      });
      state.hls = hls;
      hls.on(window.Hls.Events.ERROR, (_event, data) => {
        const code = data.response ? data.response.code : null;
        const reason = data.reason || (data.error ? String(data.error.message) : null);
        state.errors.push({ type: data.type, details: data.details, fatal: data.fatal, code, reason, at: Date.now() });
        if (!data.fatal) return; // hls.js retries those itself
        state.fatal += 1;
        state.recoveries += 1;
        if (data.type === window.Hls.ErrorTypes.MEDIA_ERROR) {
          hls.recoverMediaError();
        } else if (data.type === window.Hls.ErrorTypes.NETWORK_ERROR) {
          const manifestFailed = String(data.details).startsWith("manifest");
          setTimeout(() => (manifestFailed ? hls.loadSource(manifest) : hls.startLoad()), 1000);
        } else {
          hls.destroy();
          setTimeout(start, 2000);
        }
      });
      hls.on(window.Hls.Events.MANIFEST_PARSED, () => video.play().catch(() => {}));
      hls.loadSource(manifest);
      hls.attachMedia(video);
    } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
      video.src = manifest; // Safari, iOS: native HLS
    } else {
      statusLine.textContent = "this browser has neither Media Source Extensions nor native HLS";
    }
  }

  setInterval(() => {
    const hls = state.hls;
    state.currentTime = video.currentTime;
    state.latency = hls && Number.isFinite(hls.latency) ? hls.latency : null;
    const delay = state.latency === null ? "-" : state.latency.toFixed(1);
    statusLine.textContent = `delay behind live: ${delay} s · playing at ${video.currentTime.toFixed(1)} s` +
      (state.errors.length ? ` · ${state.errors.length} errors, ${state.recoveries} recoveries` : "");
  }, 500);

  document.getElementById("unmute").addEventListener("click", () => {
    video.muted = !video.muted;
    video.play().catch(() => {});
  });
  start();
})();
