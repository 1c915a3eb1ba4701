"""The registry's HTML pages, rendered from the JSON API's shapes (docs/registry.md, the CONTRACT).

Everything shown comes from nodes and sources (titles, names, figures, addresses): every value goes through
``html.escape`` (attributes with ``quote=True``), structured data for the scripts sits in ``data-*`` attributes
as escaped JSON, and no page has an inline script (the Content-Security-Policy allows scripts from the registry
itself only, see web.py). The scripts in static/ refresh the pages from the JSON API and build what they add
with ``textContent``, never HTML.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable, Mapping, Sequence

MAX_FIGURES_SHOWN = 64  # rows of a node's figures table; a node sending more is cut (the JSON API has them all)
ROLES = ("source", "support", "start", "engine")

Stream = Mapping[str, object]
Node = Mapping[str, object]


def e(value: object) -> str:
    """Text for HTML, attributes included; None is a dash."""
    return "–" if value is None else html.escape(str(value), quote=True)


def data_json(value: object) -> str:
    return html.escape(json.dumps(value, separators=(",", ":")), quote=True)


def fmt_bps(bits_per_second: object) -> str:
    if not isinstance(bits_per_second, int | float) or isinstance(bits_per_second, bool):
        return "–"
    value = float(bits_per_second)
    for unit in ("bit/s", "kbit/s", "Mbit/s", "Gbit/s"):
        if abs(value) < 1000 or unit == "Gbit/s":
            return f"{value:.0f} {unit}" if unit == "bit/s" else f"{value:.1f} {unit}"
        value /= 1000
    return "–"  # pragma: no cover - the loop returns


def fmt_bytes(count: object) -> str:
    if not isinstance(count, int | float) or isinstance(count, bool):
        return "–"
    return f"{count / (1 << 20):.1f} MiB"


def fmt_age(last_seen: object, now: float | None = None) -> str:
    if not isinstance(last_seen, int | float) or isinstance(last_seen, bool):
        return "–"
    seconds = max(0.0, (time.time() if now is None else now) - float(last_seen))
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def stream_bitrate(stream: Stream) -> str:
    return fmt_bps(stream.get("bitrate"))  # bits per second (the API's; the transport file's is bytes/s)


def _categories(stream: Stream) -> str:
    categories = stream.get("categories")
    return ", ".join(str(c) for c in categories) if isinstance(categories, list) else ""


def _node_counts(stream: Stream) -> str:
    """Live nodes by role: the list's ``nodes`` counts, a stream's own answer's ``node_counts`` (its ``nodes``
    lists them), else counted from that list."""
    counts = stream.get("node_counts", stream.get("nodes"))
    if isinstance(counts, list):
        live = [n.get("role") for n in counts if isinstance(n, Mapping) and n.get("state") == "live"]
        counts = {role: live.count(role) for role in ROLES}
    if not isinstance(counts, Mapping):
        return "–"
    return " · ".join(f"{counts.get(role, 0)} {role}" for role in ROLES)


def stream_key(stream: Stream) -> str:
    """What the stream's URLs name it by: its registry name, else its content id."""
    return str(stream.get("name") or stream.get("content_id"))


def page(title: str, body: str, *, scripts: Sequence[str] = (), styles: Sequence[str] = ()) -> str:
    links = "".join(f'<link rel="stylesheet" href="/static/{e(s)}">\n' for s in ("site.css", *styles))
    tags = "".join(f'<script src="/static/{e(s)}"></script>\n' for s in scripts)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{e(title)} · swarmcast registry</title>
{links}</head>
<body>
<header><a href="/">streams</a> <a href="/dashboard">dashboard</a> <a href="/api/streams">JSON</a></header>
<main>
{body}
</main>
{tags}</body>
</html>
"""


def stream_row(stream: Stream) -> str:
    key = stream_key(stream)
    live = "live" if stream.get("live") else "off air"
    return (f'<tr data-content-id="{e(stream.get("content_id"))}">'
            f'<td class="title"><a href="/streams/{e(key)}">{e(stream.get("title"))}</a></td>'
            f'<td class="name">{e(stream.get("name"))}</td><td class="categories">{e(_categories(stream))}</td>'
            f'<td class="quality">{e(stream.get("quality"))}</td><td class="bitrate">{e(stream_bitrate(stream))}</td>'
            f'<td class="live">{live}</td><td class="viewers">{e(stream.get("viewers", 0))}</td>'
            f'<td class="nodes">{e(_node_counts(stream))}</td>'
            f'<td><a class="watch" href="/watch/{e(key)}">watch</a></td></tr>')  # fmt: skip


STREAM_HEADERS = ("title", "name", "categories", "quality", "bitrate", "state", "viewers", "live nodes", "")


def stream_list(streams: Iterable[Stream], *, refresh: float) -> str:
    rows = "\n".join(stream_row(s) for s in streams)
    head = "".join(f"<th>{h}</th>" for h in STREAM_HEADERS)
    body = f"""<h1>Streams</h1>
<p id="list-status">{'' if rows else 'no streams are registered'}</p>
<table id="streams" data-refresh="{refresh:g}"><thead><tr>{head}</tr></thead>
<tbody>
{rows}
</tbody></table>"""
    return page("streams", body, scripts=("common.js", "list.js"))


def _node_row(node: Node) -> str:
    figures = node.get("figures") if isinstance(node.get("figures"), Mapping) else {}
    assert isinstance(figures, Mapping)
    return (f'<tr data-node-id="{e(node.get("node_id"))}"><td>{e(node.get("role"))}</td>'
            f'<td><a href="/nodes/{e(node.get("node_id"))}">{e(node.get("name") or node.get("node_id"))}</a></td>'
            f'<td>{e(node.get("address"))}</td><td>{e(node.get("state"))}</td>'
            f'<td>{e(fmt_age(node.get("last_seen")))}</td><td>{e(figures.get("peers"))}</td>'
            f'<td>{e(fmt_bps(figures.get("upload_bps")))}</td><td>{e(fmt_bps(figures.get("download_bps")))}</td>'
            f'<td>{e(node.get("version"))}</td></tr>')  # fmt: skip


NODE_HEADERS = ("role", "node", "address", "state", "last heartbeat", "peers", "upload", "download", "version")


def node_table(nodes: Iterable[Node]) -> str:
    rows = "\n".join(_node_row(n) for n in nodes)
    head = "".join(f"<th>{h}</th>" for h in NODE_HEADERS)
    return f'<table class="nodes"><thead><tr>{head}</tr></thead><tbody>\n{rows}\n</tbody></table>'


def _facts(pairs: Iterable[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in pairs)
    return f'<table class="facts">{rows}</table>'


def player(config: Mapping[str, object]) -> str:
    """The watch component: static/watch.js reads ``config`` (engine, engine query, HLS origin, reason) and loads
    the player (http/static/player.js, hls.js) on the way it found."""
    return (f'<div id="watch" data-config="{data_json(config)}">'
            '<video id="video" controls autoplay muted playsinline></video>'
            '<div id="bar"><button id="unmute" type="button">sound on/off</button>'
            '<span id="source">looking for a local engine…</span> <span id="status"></span></div></div>')


def charts(config: Mapping[str, object], names: Sequence[tuple[str, str]]) -> str:
    """Chart places for static/dashboard.js (uPlot): ``names`` are (chart id, heading)."""
    places = "".join(f'<section class="chart"><h3>{e(title)}</h3><div id="chart-{e(name)}"></div></section>'
                     for name, title in names)  # fmt: skip
    return (f'<div id="charts" data-config="{data_json(config)}">{places}</div>'
            '<p id="charts-status"></p>')


STREAM_CHARTS = (("viewers", "viewers"), ("upload", "upload: broadcaster vs viewers (the offload)"),
                 ("delay", "delay behind live (s)"), ("startup", "startup time (s)"), ("stalls", "stalls"))  # fmt: skip
NODE_CHARTS = (("cpu", "CPU (% of a core)"), ("memory", "memory (RSS, MiB)"))
ONE_NODE_CHARTS = (*NODE_CHARTS, ("traffic", "upload and download"))


def stream_page(stream: Stream, nodes: Sequence[Node], watch: Mapping[str, object], *, refresh: float) -> str:
    facts = _facts([
        ("name", str(stream.get("name"))), ("content id", str(stream.get("content_id"))),
        ("categories", _categories(stream)), ("quality", str(stream.get("quality") or "–")),
        ("bitrate", stream_bitrate(stream)), ("state", "live" if stream.get("live") else "off air"),
        ("viewers", str(stream.get("viewers", 0))), ("nodes", _node_counts(stream)),
    ])  # fmt: skip
    chart_config = {"scope": "stream", "content_id": stream.get("content_id"), "refresh": refresh}
    body = f"""<h1>{e(stream.get("title"))}</h1>
{facts}
<p><a href="/watch/{e(stream_key(stream))}">watch page</a> ·
<a href="/dashboard?stream={e(stream.get("content_id"))}">dashboard</a> ·
<a href="/api/streams/{e(stream.get("content_id"))}/transport">transport file</a></p>
{player(watch)}
<h2>Nodes</h2>
{node_table(nodes)}
<h2>Charts</h2>
{charts(chart_config, STREAM_CHARTS[:2])}"""
    return page(str(stream.get("title")), body, styles=("uPlot.min.css",),
                scripts=("hls.min.js", "uPlot.iife.min.js", "common.js", "watch.js", "dashboard.js"))  # fmt: skip


def watch_page(stream: Stream, watch: Mapping[str, object]) -> str:
    body = f"""<h1>{e(stream.get("title"))}</h1>
{player(watch)}
<p><a href="/streams/{e(stream_key(stream))}">about this stream</a></p>"""
    return page(str(stream.get("title")), body, scripts=("hls.min.js", "common.js", "watch.js"))


def _flat_figures(figures: object, prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """A node's figures as (name, value) rows: nested objects (per content id) one level down, bounded."""
    rows: list[tuple[str, str]] = []
    if not isinstance(figures, Mapping):
        return rows
    for key, value in figures.items():
        if len(rows) >= MAX_FIGURES_SHOWN:
            break
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and depth < 2:
            rows.extend(_flat_figures(value, name + " · ", depth + 1)[: MAX_FIGURES_SHOWN - len(rows)])
        elif key.endswith("_bps"):
            rows.append((name, fmt_bps(value)))
        elif key.endswith("_bytes"):
            rows.append((name, fmt_bytes(value)))
        elif isinstance(value, float):
            rows.append((name, f"{value:.2f}"))
        else:
            rows.append((name, json.dumps(value)[:200] if not isinstance(value, str) else value[:200]))
    return rows


def node_page(node: Node, streams: Sequence[Stream], *, refresh: float) -> str:
    label = str(node.get("name") or node.get("node_id"))
    facts = _facts([
        ("node id", str(node.get("node_id"))), ("role", str(node.get("role"))), ("state", str(node.get("state"))),
        ("last heartbeat", fmt_age(node.get("last_seen"))), ("address", str(node.get("address") or "–")),
        ("web interface", str(node.get("http") or "–")), ("capacity", fmt_bps(node.get("capacity_bps"))),
        ("version", str(node.get("version"))),
    ])  # fmt: skip
    links = " · ".join(f'<a href="/streams/{e(stream_key(s))}">{e(s.get("title"))}</a>' for s in streams)
    chart_config = {"scope": "node", "node_id": node.get("node_id"), "refresh": refresh}
    body = f"""<h1>{e(node.get("role"))} {e(label)}</h1>
{facts}
<p>streams: {links or "none"}</p>
<h2>Figures (last heartbeat)</h2>
{_facts(_flat_figures(node.get("figures")))}
<h2>Charts</h2>
{charts(chart_config, ONE_NODE_CHARTS)}"""
    return page(f"{node.get('role')} {label}", body, styles=("uPlot.min.css",),
                scripts=("uPlot.iife.min.js", "common.js", "dashboard.js"))  # fmt: skip


def dashboard_page(streams: Sequence[Stream], chosen: Stream | None, *, refresh: float, seconds: float) -> str:
    links = ['<a href="/dashboard">whole network</a>' if chosen else "<b>whole network</b>"]
    for stream in streams:
        title = e(stream.get("title"))
        same = chosen is not None and stream.get("content_id") == chosen.get("content_id")
        links.append(f"<b>{title}</b>" if same else f'<a href="/dashboard?stream={e(stream.get("content_id"))}">'
                     f"{title}</a>")  # fmt: skip
    config = {"scope": "stream" if chosen else "network", "refresh": refresh, "seconds": seconds,
              "content_id": chosen.get("content_id") if chosen else None}  # fmt: skip
    heading = f"Dashboard: {e(chosen.get('title'))}" if chosen else "Dashboard: the whole network"
    body = f"""<h1>{heading}</h1>
<nav class="scopes">{" · ".join(links)}</nav>
{charts(config, STREAM_CHARTS + NODE_CHARTS)}"""
    return page("dashboard", body, styles=("uPlot.min.css",), scripts=("uPlot.iife.min.js", "common.js",
                                                                       "dashboard.js"))  # fmt: skip


def error_page(status: int, message: str) -> str:
    return page(f"{status}", f"<h1>{status}</h1><p>{e(message)}</p>")
