"""``swarmcast demo``: test signal, source node, two support nodes and a viewer engine on loopback.

Each part is a real ``swarmcast`` process (exactly what a broadcaster would run), started in a temporary
directory. The demo prints the URL to open in a player and a status line until Ctrl-C; whatever happens, every
process it started is stopped and the directory removed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STATUS_INTERVAL = 1.0


class DemoError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Processes:
    """The demo's children: started in order, stopped in reverse, always."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, *args: str, wait_port: int | None) -> None:
        """Start ``swarmcast ARGS``; return once it listens on ``wait_port`` (None: at once)."""
        log = self.workdir / f"{name}.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "swarmcast.cli", *args],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, cwd=self.workdir,
            )  # fmt: skip
        self.children.append((name, process))
        if wait_port is None:
            print(f"  started {name:<10} pid {process.pid:<7}")
            return
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self.check()
            with contextlib.suppress(OSError), socket.create_connection((HOST, wait_port), timeout=0.5):
                print(f"  started {name:<10} pid {process.pid:<7} port {wait_port}")
                return
            time.sleep(0.1)
        raise DemoError(f"{name} did not open port {wait_port} within {START_TIMEOUT:.0f} s; see {log}")

    def check(self) -> None:
        for name, process in self.children:
            code = process.poll()
            if code is not None:
                tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise DemoError(f"{name} exited with code {code}:\n{tail}")

    def stop_all(self) -> None:
        for _name, process in reversed(self.children):
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 5.0
        for _name, process in reversed(self.children):
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own loopback URL
        body: dict[str, object] = json.loads(response.read())
        return body


def _status_line(stat: dict[str, object]) -> str:
    delay = stat.get("source_delay")
    delay_text = f"{delay:.2f} s" if isinstance(delay, int | float) else "- (open the URL in a player)"
    return (
        f"status {stat.get('status')}  players {stat.get('players')}  peers {stat.get('peers')}  "
        f"down {stat.get('speed_down')} KB/s  up {stat.get('speed_up')} KB/s  delay behind source {delay_text}"
    )


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    def raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


STATUS_WIDTH = 150


def run_demo(workdir: Path, processes: Processes, start: Callable[[], Callable[[], str | None]]) -> int:
    """``start()`` starts the demo's processes, prints what to open and returns its status line; the line is shown
    until Ctrl-C or SIGTERM, and every process is stopped and ``workdir`` removed whatever happens."""
    try:
        with _stop_on_sigterm():
            status = start()
            print("Ctrl-C stops everything.\n")
            while True:
                processes.check()
                line = status()
                if line is not None:
                    print("\r" + line[:STATUS_WIDTH].ljust(STATUS_WIDTH), end="", flush=True)
                time.sleep(STATUS_INTERVAL)
    except KeyboardInterrupt:
        print("\nstopping")
        return 0
    except (DemoError, OSError) as error:
        print(f"\ndemo failed: {error}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C (or a signal sent to the whole process group) must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        processes.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


def run() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="swarmcast-demo-"))
    processes = Processes(workdir)
    ports = {name: _free_port() for name in ("testsrc", "source", "support1", "support2", "engine", "engine_p2p")}
    print(f"swarmcast demo in {workdir}")

    def start() -> Callable[[], str | None]:
        processes.start("testsrc", "testsrc", "--port", str(ports["testsrc"]), wait_port=ports["testsrc"])
        processes.start(
            "source", "node", "source", "--bind", HOST, "--port", str(ports["source"]),
            "--source", f"http://{HOST}:{ports['testsrc']}/stream.ts", "--title", "swarmcast demo",
            "--name", "demo", "--pid-file-dir", str(workdir),
            # The source serves its support nodes first only because it authorised them (docs/security.md).
            "--support-node", f"{HOST}:{ports['support1']}", "--support-node", f"{HOST}:{ports['support2']}",
            wait_port=ports["source"],
        )  # fmt: skip
        transport = f"http://{HOST}:{ports['source']}/app/get_transport_file?format=raw"
        for name in ("support1", "support2"):
            processes.start(
                name, "node", "support", "--bind", HOST, "--port", str(ports[name]), "--url", transport,
                "--pid-file-dir", str(workdir), wait_port=ports[name],
            )  # fmt: skip
        processes.start(
            "engine", "engine", "--http-port", str(ports["engine"]), "--port", str(ports["engine_p2p"]),
            "--bind", HOST, "--pid-file-dir", str(workdir), wait_port=ports["engine"],
        )  # fmt: skip
        support = f"http://{HOST}:{ports['support1']}/app/get_transport_file"
        api = f"http://{HOST}:{ports['engine']}"
        session = _get_json(f"{api}/ace/getstream?url={support}&format=json")
        response = session.get("response")
        if not isinstance(response, dict):
            raise DemoError(f"engine refused the broadcast: {session.get('error')}")
        print()
        print("Open this in VLC, mpv or ffplay (any number of players):")
        print(f"  {response['playback_url']}")
        print(f"  (or {api}/ace/getstream?id={response['infohash']})")

        def status() -> str | None:
            stat = _get_json(str(response["stat_url"])).get("response")
            return _status_line(stat) if isinstance(stat, dict) else None

        return status

    return run_demo(workdir, processes, start)
