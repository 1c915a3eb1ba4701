"""One fleet run: compare what runs on this server with the config, then act.

How this works: ``observe`` reads pid files, this fleet's records and every running node's monitor (in parallel);
``plan`` is a pure function of that and the wanted ``NodeSpec``s and returns the actions, in order: stops of
nodes no longer in the config, starts of missing ones, then restarts (a changed command line, or a monitor that
did not answer on two runs in a row), and reports (a port held by something that is not our node, a node we did
not start). ``apply`` runs them under the run lock: stops, then every start at once, then each restart one at a
time, waiting for the node's monitor to answer before the next, so a stream never loses two nodes at once.

Unlike streaming-utils: a node is identified by its port and our record of what we ran there, so a source run
never stops support nodes; no token does not mean every node looks dead; a silent monitor is not a dead node
until it has been silent twice; a port someone else holds is reported, not fought over.
"""

from __future__ import annotations

import concurrent.futures
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from swarmcast.fleet import processes
from swarmcast.fleet.commandline import NodeSpec, base_url, comparable
from swarmcast.fleet.config import AppConfig
from swarmcast.fleet.controller import ControllerError, node_monitor
from swarmcast.fleet.records import Record, delete_record, load_records, save_record

START_TIMEOUT = 30.0  # seconds a started node has to answer its monitor
FAILURES_BEFORE_RESTART = 2
PREPARE_TIMEOUT = 60.0  # --create-hls-transport
MONITOR_WORKERS = 16


@dataclass
class Observed:
    port: int
    pid: int | None
    pid_file: Path | None
    running: bool
    record: Record | None
    monitor: dict[str, object] | None = None
    error: str = ""


@dataclass(frozen=True)
class Action:
    verb: str  # start | stop | restart | report | forget
    port: int
    text: str  # what the operator reads
    spec: NodeSpec | None = None
    observed: Observed | None = None


@dataclass
class Outcome:
    lines: list[str] = field(default_factory=list)
    failed: int = 0


def observe(app: AppConfig) -> dict[int, Observed]:
    pid_files = processes.read_pid_files(app.dir("pid"))
    records = load_records(app.dir("state"))
    found: dict[int, Observed] = {}
    for port in sorted(set(pid_files) | set(records)):
        pf = pid_files.get(port)
        pid = pf.pid if pf is not None else None
        running = pid is not None and processes.alive(pid, port)
        found[port] = Observed(port=port, pid=pid, pid_file=pf.path if pf is not None else None, running=running,
                               record=records.get(port))  # fmt: skip
    ask = [o for o in found.values() if o.running]
    with concurrent.futures.ThreadPoolExecutor(max_workers=MONITOR_WORKERS) as pool:
        for o, result in zip(ask, pool.map(lambda o: _ask(app, o.port), ask), strict=True):
            if isinstance(result, dict):
                o.monitor = result
            else:
                o.error = result
    return found


def _ask(app: AppConfig, port: int) -> dict[str, object] | str:
    try:
        return node_monitor(app, port)
    except ControllerError as error:
        return f"monitor: {error}"


def _identity_matches(spec: NodeSpec, monitor: dict[str, object] | None) -> bool:
    """A node we did not start is this entry's node (streaming-utils' matching: the source URL or the upstream)."""
    if monitor is None:
        return False
    if spec.kind == "source" and spec.source is not None and spec.source.type == "ts":
        url = monitor.get("source_url")
        return isinstance(url, str) and base_url(url) == base_url(spec.source.url)
    if spec.kind == "source":
        return False
    wanted = spec.name.rsplit(":", 1)
    got = monitor.get("download_from")
    return isinstance(got, list) and len(got) == 1 and [str(x) for x in got[0]] == [wanted[0].strip("[]"), wanted[1]]


def _changes(old: Sequence[str], new: Sequence[str]) -> str:
    """The flags whose values differ, for the log line (never values: a token or key could be among them)."""
    def flags(words: Sequence[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"engine": [words[0]] if words else []}
        current = ""
        for word in words[1:]:
            if word.startswith("--"):
                current = word
                out.setdefault(current, [])
            elif current:
                out[current].append(word)
        return out

    a, b = flags(old), flags(new)
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(changed) or "order of options"


def plan(kind: str, specs: Sequence[NodeSpec], observed: dict[int, Observed], *, host: str,
         only_port: int | None = None,
         busy: Callable[[str, int], bool] = processes.port_busy) -> list[Action]:  # fmt: skip
    """What to do so that this server runs ``specs`` (all of one ``kind``); ``only_port`` limits it to one entry."""
    stops: list[Action] = []
    starts: list[Action] = []
    restarts: list[Action] = []
    reports: list[Action] = []
    wanted = {s.port: s for s in specs if only_port is None or s.port == only_port}
    for port, spec in sorted(wanted.items()):
        o = observed.get(port)
        record = o.record if o is not None else None
        label = f"{spec.kind} {port} ({spec.name}, {spec.where})"
        if o is not None and o.running:
            if record is None:
                if _identity_matches(spec, o.monitor):
                    reports.append(Action("adopt", port, f"{label}: already running as pid {o.pid}, adopted",
                                          spec, o))  # fmt: skip
                else:
                    what = f"an engine (pid {o.pid}) this fleet did not start"
                    reports.append(Action("report", port, f"{label}: port {port} is held by {what}: left alone, "
                                          f"not started (stop {port} stops it)", spec, o))  # fmt: skip
            elif record.kind != kind:
                reports.append(Action("report", port, f"{label}: port {port} is this fleet's {record.kind} node "
                                      f"{record.name}: not started", spec, o))  # fmt: skip
            elif comparable(record.argv) != spec.comparable:
                restarts.append(Action("restart", port, f"{label}: command line changed "
                                       f"({_changes(record.argv, spec.argv)})", spec, o))  # fmt: skip
            elif o.monitor is None and record.failures + 1 >= FAILURES_BEFORE_RESTART:
                restarts.append(Action("restart", port, f"{label}: {o.error or 'monitor silent'} "
                                       f"({record.failures + 1} runs in a row)", spec, o))  # fmt: skip
            elif o.monitor is None:
                reports.append(Action("silent", port, f"{label}: {o.error or 'monitor silent'} (first time: "
                                      "left running, restarted if it fails again)", spec, o))  # fmt: skip
            else:
                reports.append(Action("ok", port, f"{label}: running, pid {o.pid}", spec, o))
        elif record is not None and record.kind != kind:
            reports.append(Action("report", port, f"{label}: port {port} belongs to this fleet's {record.kind} "
                                  f"node {record.name}: not started", spec, o))  # fmt: skip
        elif busy(host, port):
            reports.append(Action("report", port, f"{label}: port {port} is in use by another program (not a node "
                                  "of this fleet): not started", spec, o))  # fmt: skip
        else:
            why = "not running" if record is None else "down"
            starts.append(Action("start", port, f"{label}: {why}", spec, o))
    if only_port is None:
        for port, o in sorted(observed.items()):
            if port in wanted or o.record is None or o.record.kind != kind:
                continue
            text = f"{kind} {port} ({o.record.name}): no longer in the config"
            stops.append(Action("stop" if o.running else "forget", port, text, None, o))
        for port, o in sorted(observed.items()):
            if o.record is None and o.running and port not in wanted:
                reports.append(Action("report", port, f"port {port}: an engine (pid {o.pid}) this fleet did not "
                                      "start and its config does not name: left alone", None, o))  # fmt: skip
    return [*stops, *starts, *restarts, *reports]


def describe(actions: Sequence[Action]) -> list[str]:
    lines: list[str] = []
    for a in actions:
        lines.append(f"{a.verb}: {a.text}")
        if a.spec is not None and a.verb in ("start", "restart"):
            if a.spec.prepare is not None:
                lines.append(f"  prepare: {shlex.join(a.spec.prepare)}")
            lines.append(f"  command: {shlex.join(a.spec.argv)}")
    return lines


class Runner:
    """Carries out a plan. ``before_start(spec)`` (metadata restore) may refuse a start by raising ValueError."""

    def __init__(self, app: AppConfig, *, clear_logs: bool = False, force_transport: bool = False,
                 start_timeout: float = START_TIMEOUT, stop_timeout: float = processes.STOP_TIMEOUT,
                 before_start: Callable[[NodeSpec], None] | None = None,
                 say: Callable[[str], None] = print) -> None:  # fmt: skip
        self.app = app
        self.clear_logs = clear_logs
        self.force_transport = force_transport
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.before_start = before_start
        self.say = say
        self.failed = 0
        self.children: dict[int, subprocess.Popen[bytes]] = {}  # by pid
        self.started_on: dict[int, subprocess.Popen[bytes]] = {}  # by port

    @property
    def state_dir(self) -> Path:
        return self.app.dir("state")

    def apply(self, actions: Sequence[Action]) -> int:
        for a in actions:
            if a.verb in ("stop", "forget"):
                self._stop(a)
        started: list[Action] = []
        for a in actions:
            if a.verb == "start" and self._start(a):
                started.append(a)
        self._wait_up(started)
        restarts = [a for a in actions if a.verb == "restart"]
        for i, a in enumerate(restarts):
            self.say(f"restart: {a.text}")
            self._stop(a, quiet=True)
            before = self.failed
            if self._start(a, quiet=True):
                self._wait_up([a])
            if self.failed > before and i + 1 < len(restarts):
                # A new command line that does not come up (a broken beta engine, a bad flag) must not take every
                # stream down one after the other: the rest keep running their old line until the next run.
                rest = ", ".join(str(r.port) for r in restarts[i + 1 :])
                self.failed += 1
                self.say(f"error: restart of {a.port} failed: not restarting {rest} in this run")
                break
        for a in actions:
            if a.verb == "adopt" and a.spec is not None and a.observed is not None:
                save_record(self.state_dir, Record(kind=a.spec.kind, port=a.port, name=a.spec.name,
                                                   argv=a.spec.argv, pid=a.observed.pid, started_at=time.time(),
                                                   adopted=True))  # fmt: skip
                self.say(f"adopt: {a.text}")
            elif a.verb == "silent" and a.observed is not None and a.observed.record is not None:
                record = a.observed.record
                save_record(self.state_dir, record.with_(failures=record.failures + 1, last_error=a.observed.error))
                self.say(f"warning: {a.text}")
            elif a.verb == "ok" and a.observed is not None and a.observed.record is not None:
                if a.observed.record.failures or a.observed.record.pid != a.observed.pid:
                    save_record(self.state_dir, a.observed.record.with_(failures=0, last_error="",
                                                                        pid=a.observed.pid))  # fmt: skip
            elif a.verb == "report":
                self.failed += 1
                self.say(f"error: {a.text}")
        return self.failed

    def _stop(self, a: Action, *, quiet: bool = False) -> None:
        o = a.observed
        how = "was not running"
        if o is not None and o.pid is not None:
            how = processes.stop(o.pid, o.pid_file, self.stop_timeout, self.children.get(o.pid), port=o.port)
        elif o is not None and o.pid_file is not None:
            o.pid_file.unlink(missing_ok=True)
        if a.verb in ("stop", "forget"):
            delete_record(self.state_dir, a.port)
        if not quiet:
            self.say(f"{a.verb}: {a.text}: {how}")

    def _start(self, a: Action, *, quiet: bool = False) -> bool:
        spec = a.spec
        assert spec is not None
        if not quiet:
            self.say(f"start: {a.text}")
        try:
            engine = spec.argv[0]
            if not Path(engine).is_file():
                raise ValueError(f"engine_path.{spec.engine_version}: {engine} does not exist")
            for name in ("public", "private", "metadata", "log", "cache", "pid", "state"):
                self.app.dir(name).mkdir(parents=True, exist_ok=True)
            if self.before_start is not None:
                self.before_start(spec)
            if self.clear_logs:
                spec.log_path.unlink(missing_ok=True)
            if spec.prepare is not None and (self.force_transport
                                             or not all(p.is_file() for p in spec.prepare_outputs)):  # fmt: skip
                self.prepare(spec)
            child = processes.start(spec.argv, spec.log_path)
        except (ValueError, OSError) as error:
            self.failed += 1
            self.say(f"error: {spec.kind} {spec.port}: not started: {error}")
            save_record(self.state_dir, Record(kind=spec.kind, port=spec.port, name=spec.name, argv=spec.argv,
                                               failures=1, last_error=str(error)))  # fmt: skip
            return False
        self.children[child.pid] = child
        self.started_on[spec.port] = child
        save_record(self.state_dir, Record(kind=spec.kind, port=spec.port, name=spec.name, argv=spec.argv,
                                           pid=child.pid, started_at=time.time()))  # fmt: skip
        return True

    def prepare(self, spec: NodeSpec) -> None:
        assert spec.prepare is not None
        with open(spec.log_path, "ab") as log:
            try:
                code = subprocess.run(spec.prepare, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                      timeout=PREPARE_TIMEOUT, check=False).returncode  # fmt: skip
            except subprocess.TimeoutExpired:
                raise ValueError(f"--create-hls-transport did not finish in {PREPARE_TIMEOUT:g} s") from None
        if code != 0:
            raise ValueError(f"--create-hls-transport exited with {code} (see {spec.log_path})")

    def _wait_up(self, started: Sequence[Action]) -> None:
        """Wait (bounded) until each started node answers its monitor; record the pid it wrote.

        The timeout counts from the last node that came up: 25 engines started at once on a busy machine take
        longer than one, and that is not a failure as long as they keep coming up."""
        pending = {a.port: a for a in started}
        deadline = time.monotonic() + self.start_timeout
        while pending:
            for port, a in list(pending.items()):
                assert a.spec is not None
                child = self.started_on.get(port)
                # A launcher that exits 0 may have left the engine running (a start-engine wrapper): keep waiting.
                if child is not None and child.poll() is not None and child.returncode != 0:
                    del pending[port]
                    self._start_failed(a, f"exited with {child.returncode} (see {a.spec.log_path})")
                    continue
                try:
                    node_monitor(self.app, port)
                except ControllerError:
                    continue
                del pending[port]
                deadline = time.monotonic() + self.start_timeout
                pid_file = processes.read_pid_files(self.app.dir("pid")).get(port)
                pid = pid_file.pid if pid_file is not None else None
                if pid is not None:
                    record = load_records(self.state_dir).get(port)
                    if record is not None:
                        save_record(self.state_dir, record.with_(pid=pid))
                self.say(f"up: {a.spec.kind} {port} ({a.spec.name}), pid {pid}")
            if pending and time.monotonic() >= deadline:
                for a in pending.values():
                    self._start_failed(a, f"did not answer its monitor within {self.start_timeout:g} s")
                return
            if pending:
                time.sleep(0.2)

    def _start_failed(self, a: Action, why: str) -> None:
        assert a.spec is not None
        self.failed += 1
        record = load_records(self.state_dir).get(a.port)
        if record is not None:
            save_record(self.state_dir, record.with_(failures=record.failures + 1, last_error=why))
        self.say(f"error: {a.spec.kind} {a.port} ({a.spec.name}): {why}")
