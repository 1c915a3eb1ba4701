"""Reconcile's plan, with no processes: what runs (pid files, records, monitors) against what the config asks."""

from __future__ import annotations

from pathlib import Path

from swarmcast.fleet.commandline import NodeSpec
from swarmcast.fleet.reconcile import Action, Observed, plan
from swarmcast.fleet.records import Record, load_records, save_record

HOST = "0.0.0.0"


def spec(port: int, title: str = "T", kind: str = "source", cache: str = "52428800") -> NodeSpec:
    argv = ("/e", "--port", str(port), "--title", title, "--live-mem-cache-size", cache)
    return NodeSpec(kind=kind, port=port, name=f"s{port}", where=f"source_node[{port}]", argv=argv,
                    log_path=Path(f"/l/{port}.log"), engine_version="stable")  # fmt: skip


def running(s: NodeSpec, *, failures: int = 0, answers: bool = True, kind: str | None = None) -> Observed:
    record = Record(kind=kind or s.kind, port=s.port, name=s.name, argv=s.argv, pid=100 + s.port, failures=failures)
    return Observed(port=s.port, pid=100 + s.port, pid_file=Path(f"/p/{s.port}.pid"), running=True, record=record,
                    monitor={"type": s.kind} if answers else None,
                    error="" if answers else "monitor: timed out")  # fmt: skip


def verbs(actions: list[Action]) -> list[tuple[str, int]]:
    return [(a.verb, a.port) for a in actions]


def never_busy(host: str, port: int) -> bool:
    return False


def test_add_remove_change_title_in_one_plan() -> None:
    a, b, c = spec(1), spec(2), spec(3)
    observed = {1: running(a), 2: running(b)}  # 1 unchanged, 2 gets a new title, 3 is new; 4 was removed
    gone = spec(4)
    observed[4] = running(gone)
    actions = plan("source", [a, spec(2, title="New"), c], observed, host=HOST, busy=never_busy)
    assert verbs(actions) == [("stop", 4), ("start", 3), ("restart", 2), ("ok", 1)]
    assert "command line changed (--title)" in actions[2].text


def test_cache_size_alone_is_not_a_change() -> None:
    a = spec(1)
    assert verbs(plan("source", [spec(1, cache="99999999")], {1: running(a)}, host=HOST, busy=never_busy)) == [
        ("ok", 1)]  # fmt: skip


def test_a_silent_monitor_restarts_only_the_second_time() -> None:
    a = spec(1)
    first = plan("source", [a], {1: running(a, answers=False)}, host=HOST, busy=never_busy)
    assert verbs(first) == [("silent", 1)]
    second = plan("source", [a], {1: running(a, answers=False, failures=1)}, host=HOST, busy=never_busy)
    assert verbs(second) == [("restart", 1)]
    assert "2 runs in a row" in second[0].text


def test_no_token_does_not_make_nodes_look_dead() -> None:
    """streaming-utils took every node for dead without node_access_token; here an answering node is just ok."""
    a = spec(1)
    assert verbs(plan("source", [a], {1: running(a)}, host=HOST, busy=never_busy)) == [("ok", 1)]


def test_a_foreign_port_is_reported_not_fought_over() -> None:
    a = spec(1)
    actions = plan("source", [a], {}, host=HOST, busy=lambda h, p: True)
    assert verbs(actions) == [("report", 1)]
    assert "in use by another program" in actions[0].text
    # An engine we did not start, on a configured port, that is not this stream: left alone.
    stranger = Observed(port=1, pid=5, pid_file=Path("/p/1.pid"), running=True, record=None, monitor={"x": 1})
    actions = plan("source", [a], {1: stranger}, host=HOST, busy=never_busy)
    assert verbs(actions) == [("report", 1)] and "did not start" in actions[0].text


def test_support_nodes_are_not_stopped_by_a_source_run() -> None:
    """streaming-utils' start_streamers.py stops every instance not in its list, support nodes included."""
    sup = spec(9, kind="support")
    actions = plan("source", [spec(1)], {9: running(sup)}, host=HOST, busy=never_busy)
    assert verbs(actions) == [("start", 1)]
    # ... and a source entry on the support node's port is refused, not started on top of it.
    actions = plan("source", [spec(9)], {9: running(sup)}, host=HOST, busy=never_busy)
    assert verbs(actions) == [("report", 9)] and "support node" in actions[0].text


def test_a_crashed_node_is_started_again_and_only_port_limits_the_run() -> None:
    a, b = spec(1), spec(2)
    crashed = running(a)
    crashed.running = False
    actions = plan("source", [a, b], {1: crashed, 2: running(b), 3: running(spec(3))}, host=HOST, only_port=1,
                   busy=never_busy)  # fmt: skip
    assert verbs(actions) == [("start", 1)]
    assert "down" in actions[0].text


def test_adopts_a_matching_unrecorded_support_node() -> None:
    s = NodeSpec(kind="support", port=5, name="127.0.0.1:7764", where="support_node[0]", argv=("/e",),
                 log_path=Path("/l"), engine_version="stable")  # fmt: skip
    o = Observed(port=5, pid=9, pid_file=Path("/p"), running=True, record=None,
                 monitor={"download_from": [["127.0.0.1", 7764]]})  # fmt: skip
    assert verbs(plan("support", [s], {5: o}, host=HOST, busy=never_busy)) == [("adopt", 5)]


def test_records_round_trip(tmp_path: Path) -> None:
    r = Record(kind="source", port=7, name="n", argv=("/e", "--port", "7"), pid=3, failures=1, last_error="x")
    save_record(tmp_path, r)
    (tmp_path / "fleet-nodes" / "8.json").write_text("{broken")
    assert load_records(tmp_path) == {7: r}


def test_a_pid_is_the_node_of_a_port_only_if_its_command_line_says_so() -> None:
    import subprocess
    import sys
    import time

    from swarmcast.fleet.processes import serves_port

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "--port", "4242"])
    try:
        cmdline = Path(f"/proc/{child.pid}/cmdline")
        deadline = time.monotonic() + 10
        while b"time.sleep(30)" not in cmdline.read_bytes():  # until the child has exec'd (before: our own argv)
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # A pid reused by another engine (another --port) must not pass for a stale pid file's node.
        assert serves_port(child.pid, 4242)
        assert not serves_port(child.pid, 4243)
    finally:
        child.kill()
        child.wait()
