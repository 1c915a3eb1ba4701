"""``swarmcast fleet systemd --output DIR``: the fleet as systemd units, instead of streaming-utils' cron lines.

Written (all plain files; install them with ``cp DIR/* /etc/systemd/system/ && systemctl daemon-reload``):

- ``swarmcast-fleet.service`` + ``swarmcast-fleet.timer``: every minute (and 30 s after boot), the reconcile
  (``start-sources``, ``start-support``) then the pushes (``monitor`` for both types, ``update-metadata``); each
  step's failure is logged and the next step still runs (``ExecStart=-``). ``KillMode=process``: the nodes the
  reconcile starts outlive the run, as they do under cron; the run lock keeps two runs apart.
- ``swarmcast-source@.service`` and ``swarmcast-support@.service``: the other way to run nodes, one unit per
  configured node (``systemctl enable --now swarmcast-source@8640``): ``fleet exec`` looks the port up in the
  config and becomes that node's engine (same command line as the reconcile starts), systemd restarts it on
  failure, stops it with SIGTERM and then SIGKILL after 10 s. Use one way or the other for a server's nodes: a
  server whose nodes are units runs the timer with ``--pushes-only``.
- ``swarmcast-broadcaster.service``: ``swarmcast broadcaster`` at boot (the videoDAC recipe's "run on server
  startup"); its arguments come from ``/etc/default/swarmcast-broadcaster`` (``SWARMCAST_BROADCASTER_ARGS=...``).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

UNITS = ("swarmcast-fleet.service", "swarmcast-fleet.timer", "swarmcast-source@.service",
         "swarmcast-support@.service", "swarmcast-broadcaster.service")  # fmt: skip


def _swarmcast_command() -> list[str]:
    found = shutil.which("swarmcast", path=str(Path(sys.executable).parent)) or shutil.which("swarmcast")
    return [found] if found else [sys.executable, "-m", "swarmcast"]


def _exec(words: list[str]) -> str:
    # systemd's own quoting is close to the shell's for plain words; a '%' must be doubled (specifiers).
    return shlex.join(words).replace("%", "%%")


def render_units(config: Path, *, swarmcast: list[str], user: str | None, pushes_only: bool = False,
                 workdir: Path | None = None) -> dict[str, str]:  # fmt: skip
    config = config.resolve()
    workdir = workdir or config.parent.parent
    fleet = [*swarmcast, "fleet"]
    user_lines = f"User={user}\n" if user else ""
    steps = [] if pushes_only else [["start-sources"], ["start-support"]]
    steps += [["monitor", "--node-type", "source"], ["monitor", "--node-type", "support"], ["update-metadata"]]
    exec_lines = "".join(f"ExecStart=-{_exec([*fleet, step[0], '--config', str(config), *step[1:]])}\n"
                         for step in steps)  # fmt: skip
    units = {
        "swarmcast-fleet.service": (
            "[Unit]\n"
            "Description=swarmcast fleet: reconcile this server's nodes with the config, push monitoring and metadata\n"
            "Documentation=https://github.com/swarmcast/swarmcast/blob/main/docs/fleet.md\n"
            "Wants=network-online.target\nAfter=network-online.target\n\n"
            "[Service]\nType=oneshot\n"
            f"{user_lines}WorkingDirectory={workdir}\n"
            f"{exec_lines}"
            "# The nodes the reconcile starts must outlive this run (they are found again by their pid files).\n"
            "KillMode=process\nTimeoutStartSec=15min\n"
        ),
        "swarmcast-fleet.timer": (
            "[Unit]\nDescription=swarmcast fleet every minute (what streaming-utils leaves to cron)\n\n"
            "[Timer]\nOnBootSec=30s\nOnUnitInactiveSec=60s\nAccuracySec=5s\nUnit=swarmcast-fleet.service\n\n"
            "[Install]\nWantedBy=timers.target\n"
        ),
        "swarmcast-broadcaster.service": (
            "[Unit]\nDescription=swarmcast broadcaster (RTMP in, HLS and P2P out)\n"
            "Wants=network-online.target\nAfter=network-online.target\n\n"
            f"[Service]\nType=simple\n{user_lines}"
            "EnvironmentFile=-/etc/default/swarmcast-broadcaster\n"
            f"ExecStart={_exec([*swarmcast, 'broadcaster'])} $SWARMCAST_BROADCASTER_ARGS\n"
            "Restart=on-failure\nRestartSec=5s\nKillMode=mixed\nTimeoutStopSec=10s\n\n"
            "[Install]\nWantedBy=multi-user.target\n"
        ),
    }
    for kind in ("source", "support"):
        units[f"swarmcast-{kind}@.service"] = (
            f"[Unit]\nDescription=swarmcast {kind} node on port %i (from {str(config).replace('%', '%%')})\n"
            "Wants=network-online.target\nAfter=network-online.target\n\n"
            f"[Service]\nType=simple\n{user_lines}WorkingDirectory={workdir}\n"
            f"ExecStart={_exec([*fleet, 'exec', '--config', str(config), kind])} %i\n"
            "Restart=on-failure\nRestartSec=5s\n"
            "# SIGTERM to the engine, SIGKILL after 10 s (the fleet's own stop does the same).\n"
            "KillMode=mixed\nKillSignal=SIGTERM\nTimeoutStopSec=10s\nLimitNOFILE=65536\n\n"
            "[Install]\nWantedBy=multi-user.target\n"
        )
    return units


def write_units(output: Path, units: dict[str, str]) -> list[Path]:
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in units.items():
        path = output / name
        path.write_text(text)
        written.append(path)
    return written


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("systemd", help="write systemd units: the fleet timer, node templates, the broadcaster")
    p.add_argument("--output", type=Path, required=True, metavar="DIR", help="directory to write the "
                                                                             "units to (required)")
    p.add_argument("--user", help="run as this user (default: root, as streaming-utils' cron lines)")
    p.add_argument("--pushes-only", action="store_true",
                   help="the timer only pushes monitoring and metadata, nodes run as swarmcast-*@PORT "
                        "units (default: reconcile too)")
    p.set_defaults(func=run_systemd)


def run_systemd(args: argparse.Namespace) -> int:
    config = Path(getattr(args, "config", "config/config.json"))
    units = render_units(config, swarmcast=_swarmcast_command(), user=args.user, pushes_only=args.pushes_only)
    for path in write_units(args.output, units):
        print(f"wrote {path}")
    return 0
