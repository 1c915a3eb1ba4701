"""``swarmcast fleet``: a broadcaster's nodes on this server, from streaming-utils' config files (swarmcast/fleet/).

Subcommands mirror streaming-utils' scripts: start-sources, start-support, stop, monitor, update-metadata,
cleanup; and status, receiver, systemd. Exit codes: 0 done, 1 something failed (each failure is a line on stdout
starting ``error:``), 2 a bad command line or config (nothing was started or stopped), 3 another run holds the lock.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from swarmcast.commands.options import non_negative_float, port, positive_float
from swarmcast.fleet import processes, receiver, systemd
from swarmcast.fleet.commandline import NodeSpec, source_specs, support_specs
from swarmcast.fleet.config import AppConfig, ConfigError, check_sources, check_supports, load_app_config
from swarmcast.fleet.controller import ControllerError, load_list
from swarmcast.fleet.push import push_monitor, restore_metadata, update_metadata
from swarmcast.fleet.reconcile import START_TIMEOUT, Runner, describe, observe, plan
from swarmcast.fleet.records import delete_record, load_records
from swarmcast.fleet.status import status_rows, status_table

PROG = "swarmcast fleet"
EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED = 1, 2, 3
DEFAULT_CONFIG = Path("config/config.json")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fleet", help="start, stop and reconcile a broadcaster's nodes from streaming-utils' config files",
        description="Runs the source and support nodes a streaming-utils config describes (docs/fleet.md).",
    )  # fmt: skip
    add_config(parser, DEFAULT_CONFIG)
    subs = parser.add_subparsers(dest="fleet_command", required=True, metavar="SUBCOMMAND")
    real_add = subs.add_parser

    def add_parser(name: str, **kwargs: object) -> argparse.ArgumentParser:
        sub = real_add(name, **kwargs)  # type: ignore[arg-type]
        add_config(sub, argparse.SUPPRESS)
        return sub

    subs.add_parser = add_parser  # type: ignore[method-assign]

    def timing(p: argparse.ArgumentParser) -> None:
        p.add_argument("--start-timeout", type=positive_float, default=START_TIMEOUT, metavar="SECONDS",
                       help="how long a started node has to answer its monitor, counted from the last node that "
                            f"came up (default {START_TIMEOUT:g})")  # fmt: skip
        p.add_argument("--stop-timeout", type=non_negative_float, default=processes.STOP_TIMEOUT,
                       metavar="SECONDS", help="SIGTERM to SIGKILL (default %(default)g)")  # fmt: skip

    src = subs.add_parser("start-sources", help="start the config's source nodes; stop and restart to match it")
    src.add_argument("--port", type=port, help="only the node on this port, nothing else is stopped "
                                               "(default: every node)")
    src.add_argument("--dry-run", action="store_true", help="print what would be done and the command "
                                                            "lines (default: do it)")
    src.add_argument("--get-remote-metadata", action="store_true",
                     help="ask the controller for each stream's metadata (?get_metadata) and restore it (default: off)")
    src.add_argument("--force-creating-transport-files", action="store_true",
                     help="HLS streams: make the transport files again even if they exist (default: only when missing)")
    src.add_argument("--clear-logs-on-start", action="store_true", help="remove a node's log before "
                                                                        "starting it (default: append)")
    timing(src)
    src.set_defaults(func=lambda a: _reconcile(a, "source"))

    sup = subs.add_parser("start-support", help="start the config's support nodes; stop and restart to match it")
    sup.add_argument("--port", type=port, help="only the node on this port, nothing else is stopped "
                                               "(default: every node)")
    sup.add_argument("--dry-run", action="store_true", help="print what would be done and the command "
                                                            "lines (default: do it)")
    sup.add_argument("--clear-logs-on-start", action="store_true", help="remove a node's log before "
                                                                        "starting it (default: append)")
    timing(sup)
    sup.set_defaults(func=lambda a: _reconcile(a, "support"), get_remote_metadata=False,
                     force_creating_transport_files=False)  # fmt: skip

    stop = subs.add_parser("stop", help="stop all nodes, or the one on PORT (SIGTERM, then SIGKILL)")
    stop.add_argument("which", metavar="all|PORT", type=_all_or_port)
    stop.add_argument("--stop-timeout", type=non_negative_float, default=processes.STOP_TIMEOUT, metavar="SECONDS",
                      help="SIGTERM to SIGKILL (default %(default)g)")  # fmt: skip
    stop.add_argument("--dry-run", action="store_true", help="print what would be stopped (default: stop)")
    stop.set_defaults(func=_stop)

    mon = subs.add_parser("monitor", help="POST each node's monitor JSON to controller.monitor")
    mon.add_argument("--node-type", choices=("source", "support"), required=True,
                     help="the type sent with each node's figures (required)")
    mon.set_defaults(func=lambda a: _with_app(a, lambda app: push_monitor(app, a.node_type)))

    meta = subs.add_parser("update-metadata",
                           help="POST every stream's .sauth/.restart to controller.metadata_receiver")
    meta.set_defaults(func=lambda a: _with_app(a, update_metadata))

    clean = subs.add_parser("cleanup", help="remove the log, cache and pid dirs (as streaming-utils' cleanup.py)")
    clean.set_defaults(func=_cleanup)

    stat = subs.add_parser("status", help="a table of every node: port, type, stream, pid, up/down, peers, upload "
                                          "(exit 1 if one is not up)")
    stat.add_argument("--json", action="store_true", help="JSON lines instead of a table (default: a table)")
    stat.add_argument("--running-only", action="store_true",
                      help="do not load the stream lists, so configured nodes that do not run are not "
                           "shown (default: load them)")
    stat.set_defaults(func=_status)

    ex = subs.add_parser("exec", help="become the engine of the configured node on PORT (for systemd units)")
    ex.add_argument("kind", choices=("source", "support"))
    ex.add_argument("node_port", type=port, metavar="PORT")
    ex.set_defaults(func=_exec_node)

    receiver.register(subs)
    systemd.register(subs)


def add_config(parser: argparse.ArgumentParser, default: object) -> None:
    """``--config`` before or after the subcommand (``swarmcast fleet start-sources --config PATH --dry-run``: the
    command line's unknown-option check reads the subcommand's own options)."""
    parser.add_argument("--config", type=Path, default=default, metavar="PATH",
                        help="the app config (default: config/config.json under the current directory)")  # fmt: skip


def _all_or_port(text: str) -> int:
    return 0 if text == "all" else port(text)


def _load(args: argparse.Namespace) -> AppConfig:
    return load_app_config(args.config)


def _with_app(args: argparse.Namespace, action: Callable[[AppConfig], int]) -> int:
    try:
        app = _load(args)
    except ConfigError as error:
        return _config_error(error)
    return action(app)


def _config_error(error: Exception) -> int:
    for line in str(error).splitlines():
        print(f"{PROG}: error: {line}", file=sys.stderr)
    print(f"{PROG}: nothing was started or stopped", file=sys.stderr)
    return EXIT_USAGE


def _reconcile(args: argparse.Namespace, kind: str) -> int:
    try:
        app = _load(args)
        specs, warnings, origin = _specs(app, kind, get_metadata=kind == "source" and args.get_remote_metadata)
    except (ConfigError, ControllerError) as error:
        return _config_error(error)
    for warning in warnings:
        print(f"warning: {warning}")
    if args.port is not None and all(s.port != args.port for s in specs):
        print(f"{PROG}: error: --port {args.port}: no {kind} node on that port in {origin}", file=sys.stderr)
        return EXIT_USAGE
    if args.dry_run:
        actions = plan(kind, specs, observe(app), host=app.bind or "0.0.0.0", only_port=args.port)
        for line in describe(actions):
            print(f"DRY-RUN: {line}")
        return 0
    try:
        with processes.run_lock(app.dir("state")):
            actions = plan(kind, specs, observe(app), host=app.bind or "0.0.0.0", only_port=args.port)
            runner = Runner(app, clear_logs=args.clear_logs_on_start,
                            force_transport=args.force_creating_transport_files,
                            start_timeout=args.start_timeout, stop_timeout=args.stop_timeout,
                            before_start=lambda spec: restore_metadata(app, spec))  # fmt: skip
            failed = runner.apply(actions)
    except processes.LockedError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return EXIT_LOCKED
    print(f"{kind}: {len(specs)} in the config, {failed} problem(s)")
    return EXIT_FAILED if failed else 0


def _specs(app: AppConfig, kind: str, *, get_metadata: bool) -> tuple[list[NodeSpec], list[str], str]:
    endpoint = "source_node" if kind == "source" else "support_node"
    raw, origin = load_list(app, endpoint, get_metadata=get_metadata)
    if kind == "source":
        entries, warnings = check_sources(raw, app, origin)
        return source_specs(app, entries), warnings, origin
    supports, warnings = check_supports(raw, app, origin)
    return support_specs(app, supports), warnings, origin


def _exec_node(args: argparse.Namespace) -> int:
    """Look the node up, restore its metadata, make HLS transport files, then exec its engine (pid stays)."""
    try:
        app = _load(args)
        specs, warnings, origin = _specs(app, args.kind, get_metadata=False)
    except (ConfigError, ControllerError) as error:
        return _config_error(error)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    spec = next((s for s in specs if s.port == args.node_port), None)
    if spec is None:
        print(f"{PROG}: error: no {args.kind} node on port {args.node_port} in {origin}", file=sys.stderr)
        return EXIT_USAGE
    runner = Runner(app, before_start=lambda s: restore_metadata(app, s))
    try:
        for name in ("public", "private", "metadata", "log", "cache", "pid", "state"):
            app.dir(name).mkdir(parents=True, exist_ok=True)
        restore_metadata(app, spec)
        if spec.prepare is not None and not all(p.is_file() for p in spec.prepare_outputs):
            runner.prepare(spec)
    except (ValueError, OSError) as error:
        print(f"{PROG}: error: {spec.kind} {spec.port}: {error}", file=sys.stderr)
        return EXIT_FAILED
    sys.stdout.flush()
    os.execv(spec.argv[0], spec.argv)  # noqa: S606 (the engine, as the reconcile starts it, without a shell)
    return EXIT_FAILED  # not reached: execv replaces this process or raises


def _stop(args: argparse.Namespace) -> int:
    try:
        app = _load(args)
    except ConfigError as error:
        return _config_error(error)
    def run() -> int:
        found = processes.read_pid_files(app.dir("pid"))
        records = load_records(app.dir("state"))
        ports = sorted(set(found) | set(records)) if args.which == 0 else [args.which]
        if args.which and args.which not in found and args.which not in records:
            print(f"stop: no node on port {args.which}")
            return EXIT_FAILED
        for p in ports:
            pf = found.get(p)
            pid = pf.pid if pf is not None else None
            if args.dry_run:
                print(f"DRY-RUN: stop: port {p}, pid {pid}")
                continue
            how = processes.stop(pid, pf.path, args.stop_timeout, port=p) if pid is not None and pf is not None \
                else "was not running"  # fmt: skip
            if pid is None and pf is not None:
                pf.path.unlink(missing_ok=True)
            delete_record(app.dir("state"), p)
            print(f"stop: port {p}, pid {pid}: {how}")
        if not ports:
            print("stop: no running nodes")
        return 0

    if args.dry_run:
        return run()
    try:
        with processes.run_lock(app.dir("state")):
            return run()
    except processes.LockedError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return EXIT_LOCKED


def _cleanup(args: argparse.Namespace) -> int:
    try:
        app = _load(args)
    except ConfigError as error:
        return _config_error(error)
    running = sorted(p for p, f in processes.read_pid_files(app.dir("pid")).items()
                     if f.pid is not None and processes.alive(f.pid))  # fmt: skip
    if running:
        # Without their pid files, running nodes would be invisible to every later run (and started twice).
        print(f"{PROG}: error: nodes still run on port(s) {', '.join(map(str, running))}: stop all first",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    for name in ("log", "cache", "pid"):
        path = app.dir(name)
        if path.is_dir():
            print(f"remove dir {path}")
            shutil.rmtree(path)
    return 0


def _status(args: argparse.Namespace) -> int:
    try:
        app = _load(args)
    except ConfigError as error:
        return _config_error(error)
    configured: list[NodeSpec] = []
    if not args.running_only:
        for kind in ("source", "support"):
            try:
                specs, _, _ = _specs(app, kind, get_metadata=False)
            except (ConfigError, ControllerError) as error:
                first = str(error).splitlines()[0]
                print(f"warning: {kind} list not loaded ({first}): its nodes that do not run are not shown",
                      file=sys.stderr)  # fmt: skip
                continue
            configured += specs
    rows = status_rows(app, configured)
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(status_table(rows))
    return 0 if all(row["state"] == "up" for row in rows) else EXIT_FAILED
