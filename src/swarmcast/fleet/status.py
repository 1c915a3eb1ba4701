"""``fleet status``: every node this server knows (pid files and this fleet's records), one row each."""

from __future__ import annotations

from collections.abc import Sequence

from swarmcast.fleet.commandline import NodeSpec
from swarmcast.fleet.config import AppConfig
from swarmcast.fleet.reconcile import observe

COLUMNS = ("port", "type", "stream", "pid", "state", "peers", "upload", "last_error")


def status_rows(app: AppConfig, configured: Sequence[NodeSpec] = ()) -> list[dict[str, object]]:
    """Every node with a pid file or a record, and every configured node that has neither ("not started")."""
    rows: list[dict[str, object]] = []
    observed = observe(app)
    for spec in configured:
        if spec.port not in observed:
            rows.append({"port": spec.port, "type": spec.kind, "stream": spec.name, "pid": None,
                         "state": "not started", "peers": None, "upload": None, "last_error": ""})  # fmt: skip
    for port, o in sorted(observed.items()):
        record = o.record
        monitor = o.monitor or {}
        if not o.running:
            state = "down"
        elif o.monitor is None:
            state = "no answer"
        else:
            state = "up"
        error = o.error or (record.last_error if record is not None else "")
        if o.running and o.monitor is not None:
            error = ""
        rows.append({
            "port": port,
            "type": record.kind if record is not None else f"? ({monitor.get('type', 'not ours')})",
            "stream": record.name if record is not None else str(monitor.get("source_url") or ""),
            "pid": o.pid if o.running else None,
            "state": state,
            "peers": monitor.get("connected_peers_count"),
            "upload": monitor.get("upload_speed"),
            "last_error": error,
        })  # fmt: skip
    return sorted(rows, key=lambda row: int(str(row["port"])))


def _cell(key: str, value: object) -> str:
    if value is None:
        return "-"
    if key == "upload" and isinstance(value, int):
        return f"{value / 1000:.1f} kB/s"
    return str(value)


def status_table(rows: list[dict[str, object]]) -> str:
    cells = [[_cell(k, row[k]) for k in COLUMNS] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    if not rows:
        lines.append("(no nodes)")
    return "\n".join(lines)
