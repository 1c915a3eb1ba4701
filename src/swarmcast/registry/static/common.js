// Shared by the registry's pages: JSON reads with a timeout, number formats. Nothing here writes HTML: every
// value from the registry (titles, names come from nodes) reaches the page through textContent.
"use strict";
window.swarmcast = (function () {
  async function getJson(url, timeoutMs) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs || 10000);
    try {
      const response = await fetch(url, { cache: "no-store", signal: abort.signal });
      if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
      return await response.json();
    } finally {
      clearTimeout(timer);
    }
  }
  function bps(bitsPerSecond) {
    if (typeof bitsPerSecond !== "number" || !Number.isFinite(bitsPerSecond)) return "–";
    let value = bitsPerSecond;
    for (const unit of ["bit/s", "kbit/s", "Mbit/s"]) {
      if (Math.abs(value) < 1000) return unit === "bit/s" ? `${value.toFixed(0)} ${unit}` : `${value.toFixed(1)} ${unit}`;
      value /= 1000;
    }
    return `${value.toFixed(1)} Gbit/s`;
  }
  function cell(row, text, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    row.appendChild(td);
    return td;
  }
  function link(parent, href, text, className) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    if (className) a.className = className;
    parent.appendChild(a);
    return a;
  }
  function config(element) {
    return element ? JSON.parse(element.dataset.config || "{}") : {};
  }
  return { getJson, bps, cell, link, config };
})();
