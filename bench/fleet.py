"""The fleet at scale on this machine: S streams, each a source and a support node, started by one
``fleet start-sources`` and one ``fleet start-support``, all fed by one low-bitrate test signal.

Measured: time to all-up (each run returns once every node it started answers its monitor), memory (RSS) and
CPU per node over a quiet window, a reconcile with nothing to do, a restore of one stream (its source SIGKILLed
and its .sauth/.restart deleted, then ``start-sources --get-remote-metadata`` through ``fleet receiver`` until
the node answers), and ``stop all``.

    python bench/fleet.py --streams 25 --out /tmp/fleet-bench     # 50 nodes
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.test_fleet_nodes import fleet, signal_url, source_entry, write_root
from tests.integration.test_fleet_restore import TOKEN, receiver
from tests.procs import free_port

HOST = "127.0.0.1"


def timed(config: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.monotonic()
    result = fleet(config, *args, timeout=900)
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        raise SystemExit(f"fleet {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return elapsed, result


def node_pids(root: Path) -> dict[int, int]:
    return {int(p.stem.rsplit("-", 1)[1]): int(p.read_text()) for p in (root / "tmp" / "run").glob("*.pid")}


def sample(pids: dict[int, int], window: float) -> dict[int, tuple[int, float]]:
    """Per port: (RSS bytes, CPU % of one core over ``window`` s)."""
    procs = {port: psutil.Process(pid) for port, pid in pids.items()}
    before = {port: sum(p.cpu_times()[:2]) for port, p in procs.items()}
    time.sleep(window)
    out: dict[int, tuple[int, float]] = {}
    for port, p in procs.items():
        with contextlib.suppress(psutil.Error):
            out[port] = (p.memory_info().rss, 100 * (sum(p.cpu_times()[:2]) - before[port]) / window)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--streams", type=int, default=25)
    parser.add_argument("--window", type=float, default=20.0, help="seconds of the quiet CPU/memory window")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "run"
    tmp.mkdir(exist_ok=True)
    ctl = tmp / "ctl"
    ctl.mkdir(exist_ok=True)
    rport = free_port()
    base = f"http://{HOST}:{rport}"
    root = tmp / "server"
    config = write_root(root, source_node=f"{base}/source_node?token={TOKEN}", support_node="support.json",
                        metadata=f"{base}/metadata?token={TOKEN}")  # fmt: skip
    s_ports = [free_port() for _ in range(args.streams)]
    p_ports = [free_port() for _ in range(args.streams)]
    figures: dict[str, object] = {"streams": args.streams, "nodes": 2 * args.streams, "cpus": os.cpu_count(),
                                  "memory_total": psutil.virtual_memory().total}  # fmt: skip
    with signal_url(tmp) as url, receiver(tmp, rport):
        (ctl / "source.json").write_text(json.dumps([
            source_entry(f"ch{i}", port, url, title=f"Channel {i}", extended_logging=0)
            for i, port in enumerate(s_ports)
        ]))  # fmt: skip
        (ctl / "support.json").write_text("[]")
        (root / "support.json").write_text(json.dumps([
            {"port": p, "source_ip": HOST, "source_port": s, "extended_logging": 0}
            for s, p in zip(s_ports, p_ports, strict=True)
        ]))  # fmt: skip
        try:
            t_sources, _ = timed(config, "start-sources")
            t_support, _ = timed(config, "start-support")
            figures["all_up_s"] = round(t_sources + t_support, 2)
            figures["start_sources_s"] = round(t_sources, 2)
            figures["start_support_s"] = round(t_support, 2)
            pids = node_pids(root)
            figures["running"] = len(pids)
            time.sleep(5)  # let the support nodes settle before the quiet window
            stats = sample(pids, args.window)
            for kind, ports in (("source", s_ports), ("support", p_ports)):
                rss = [stats[p][0] for p in ports if p in stats]
                cpu = [stats[p][1] for p in ports if p in stats]
                figures[f"{kind}_rss_mib_median"] = round(statistics.median(rss) / 2**20, 1)
                figures[f"{kind}_rss_mib_max"] = round(max(rss) / 2**20, 1)
                figures[f"{kind}_cpu_pct_median"] = round(statistics.median(cpu), 2)
                figures[f"{kind}_cpu_pct_max"] = round(max(cpu), 2)
            figures["machine_load_1m"] = os.getloadavg()[0]
            t_idle_src, r1 = timed(config, "start-sources")
            t_idle_sup, r2 = timed(config, "start-support")
            assert "start:" not in r1.stdout + r2.stdout
            assert "restart:" not in r1.stdout + r2.stdout
            figures["reconcile_nothing_to_do_s"] = {"sources": round(t_idle_src, 2), "support": round(t_idle_sup, 2)}
            timed(config, "update-metadata")
            pid = pids[s_ports[0]]
            os.kill(pid, signal.SIGKILL)
            while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                time.sleep(0.05)
            for ext in ("sauth", "restart"):
                (root / "tmp" / "metadata" / f"ch0.{ext}").unlink()
            t_restore, r3 = timed(config, "start-sources", "--get-remote-metadata")
            assert "restore: ch0: key written" in r3.stdout, r3.stdout
            figures["restore_one_stream_s"] = round(t_restore, 2)
        finally:
            t_stop, _ = timed(config, "stop", "all")
            figures["stop_all_s"] = round(t_stop, 2)
    (out / "result.json").write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
