"""``swarmcast ctl``'s human output: rich tables of what the engine or node answered (``--json`` skips this).

Every value is put in a table as ``rich.text.Text``, never as markup: a broadcast's title, a source URL or an
input's last error come from elsewhere (a transport file, a server's answer), and ``[link=...]`` or escape
sequences in them must print as the characters they are: control characters (ESC included, which rich keeps)
become U+FFFD.
"""

from __future__ import annotations

import shutil
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

WIDTH_WITHOUT_TERMINAL = 200  # a pipe or a file gets this wide a table instead of rich's 80 columns


def _console() -> Console:
    width = None if sys.stdout.isatty() else max(shutil.get_terminal_size((WIDTH_WITHOUT_TERMINAL, 24)).columns,
                                                 WIDTH_WITHOUT_TERMINAL)  # fmt: skip
    return Console(width=width, highlight=False)


def _bytes(value: Any) -> Text:
    if not isinstance(value, int | float):
        return Text("-")
    for unit in ("B", "kB", "MB"):
        if abs(value) < 1000:
            return Text(f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}")
        value /= 1000
    return Text(f"{value:.1f} GB")


def _rate(value: Any) -> Text:
    return Text("-" if not isinstance(value, int | float) else f"{value / 1000:.1f} kB/s")


def _text(value: Any) -> Text:
    text = "-" if value is None else str(value)
    return Text(text if text.isprintable() else "".join(c if c.isprintable() else "\ufffd" for c in text))


def broadcasts_table(broadcasts: list[dict[str, Any]]) -> Table:
    table = Table(title="broadcasts", title_justify="left")
    for column in ("content id", "title", "state", "players", "sessions", "peers src/sup/view", "down", "up",
                   "downloaded", "uploaded", "to players", "delay s", "startup s"):  # fmt: skip
        table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=24 if column == "title" else None)
    for b in broadcasts:
        roles = b.get("peers_by_role") or {}
        peers = f"{roles.get('source', 0)}/{roles.get('support', 0)}/{roles.get('viewer', 0)}"
        table.add_row(
            _text(b.get("infohash")), _text(b.get("title")), _text(b.get("state")), _text(b.get("players")),
            _text(b.get("sessions")), _text(peers),
            _rate(b.get("download_speed")), _rate(b.get("upload_speed")), _bytes(b.get("downloaded")),
            _bytes(b.get("uploaded")), _bytes(b.get("delivered")), _text(b.get("delay")), _text(b.get("startup_mean")),
        )  # fmt: skip
    return table


def sessions_table(sessions: list[dict[str, Any]]) -> Table:
    table = Table(title="playback sessions", title_justify="left")
    for column in ("session id", "content id", "players", "age s", "idle s"):
        table.add_column(column, no_wrap=True)
    for s in sessions:
        table.add_row(_text(s.get("session_id")), _text(s.get("infohash")), _text(s.get("players")),
                      _text(s.get("age")), _text(s.get("idle")))  # fmt: skip
    return table


def pairs_table(title: str, pairs: dict[str, Any]) -> Table:
    table = Table(title=_text(title), title_justify="left", show_header=False)
    table.add_column("name", style="bold")
    table.add_column("value")
    for key, value in pairs.items():
        table.add_row(_text(key), _text(value))
    return table


def peers_table(peers: list[dict[str, Any]]) -> Table:
    table = Table(title="connected peers", title_justify="left")
    for column in ("address", "dir", "role", "down", "up", "downloaded", "uploaded", "choked", "for s"):
        table.add_column(column, no_wrap=column == "address")
    for p in peers:
        address = p.get("address") or ["?", 0]
        role = "source" if p.get("source") else "support" if p.get("support_node") else "viewer"
        table.add_row(_text(f"{address[0]}:{address[1]}"), _text(p.get("direction")), _text(role),
                      _rate(p.get("download_speed")), _rate(p.get("upload_speed")), _bytes(p.get("downloaded")),
                      _bytes(p.get("uploaded")), _text("yes" if p.get("choked") else "no"),
                      _text(p.get("connected_for")))  # fmt: skip
    return table


def show(command: str, result: Any) -> None:
    console = _console()
    if command == "sessions":
        console.print(broadcasts_table(result.get("broadcasts", [])))
        console.print(sessions_table(result.get("sessions", [])))
        console.print(Text(f"players reading now: {result.get('streams', 0)}; settings: "
                           + ", ".join(f"{k} {v}" for k, v in (result.get("settings") or {}).items())))  # fmt: skip
    elif command == "monitor" and isinstance(result, list):  # an engine's broadcasts
        console.print(broadcasts_table(result))
    elif command == "monitor":
        scalars = {k: v for k, v in result.items() if not isinstance(v, list | dict)}
        console.print(pairs_table(f"{result.get('type', 'node')} node on port {result.get('port')}", scalars))
        for key in ("source_status", "hls_status", "rejected_connections"):
            if isinstance(result.get(key), dict) and result[key]:
                console.print(pairs_table(key.replace("_", " "), result[key]))
        if result.get("connected_peers"):
            console.print(peers_table(result["connected_peers"]))
        elif result.get("connected_peers_count"):
            console.print("(peers are listed when the node runs with --stats-report-peers)")
    elif command == "limits":
        console.print(pairs_table("limits", result))
        console.print("(upload_limit in KB/s, 0 = none)")
    elif command == "start":
        console.print(pairs_table("session started", {k: result.get(k) for k in (
            "playback_session_id", "infohash", "playback_url", "stat_url", "command_url")}))  # fmt: skip
    else:
        console.print(pairs_table(command, result))
