"""The chain under attack in bench/hostile.py: real processes, an honest player, and what we sample of them.

- ``Chain`` starts ``testsrc -> source node -> support node -> viewer engine`` on 127.0.0.1 (the support node
  fetching the transport file with the source's access token) with
  ``sys.executable -m swarmcast.cli`` and ``PYTHONPATH`` set to the code under test (``--code``), each in its own
  process group with an address-space cap (so a memory blow-up ends in MemoryError, not in the machine swapping),
  and stops every one of them, SIGTERM then SIGKILL, whatever happened.
- The honest player is a child process of its own (``python bench/hostile_chain.py player ...``), so an attack
  that keeps this process busy cannot show up as a stall: it reads ``/ace/getstream`` continuously, reconnects
  (after 1 s) when the stream ends or fails, and writes one line per chunk (monotonic time, bytes) to a file.
  CLOCK_MONOTONIC is system-wide on Linux, so its times compare with ours.
- ``Sampler`` records, every 0.5 s, RSS, CPU time, open descriptors and TCP connections to or from attacker
  addresses (anything on 127.0.0.0/8 but 127.0.0.1) of every node, with psutil.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
START_TIMEOUT = 40.0  # seconds for a node to listen / publish its transport file
SAMPLE_INTERVAL = 0.5

SPAWNED: list[subprocess.Popen[bytes]] = []  # every child, for the last-resort reaper of bench/hostile.py
_next_port = 20000 + (os.getpid() * 53) % 8000


def free_port(host: str = HOST) -> int:
    """A listening port below the ephemeral range, handed out once per run (no collision with client sockets)."""
    global _next_port
    for _ in range(5000):
        port = _next_port
        _next_port = 20000 + (_next_port - 20000 + 1) % 8000
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port")


def _limited(command: list[str], as_bytes: int, nofile: int | None) -> list[str]:
    """``command`` under ``prlimit`` (it sets the limits, then execs: the pid is the command's)."""
    limits = []
    if as_bytes > 0:
        limits.append(f"--as={as_bytes}")
    if nofile is not None:
        limits.append(f"--nofile={nofile}:{nofile}")  # soft = hard: the node cannot raise it
    if not limits:
        return command
    if shutil.which("prlimit") is None:
        raise RuntimeError("bench/hostile.py needs prlimit (util-linux) to cap the nodes")
    return ["prlimit", *limits, "--", *command]


@dataclass
class Node:
    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path
    http_port: int | None = None
    args: tuple[str, ...] = ()
    limits: bool = True
    nofile: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, limit: int = 2000) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return text[-limit:]


def stop_process(popen: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> str:
    """SIGTERM to the process group, SIGKILL after ``timeout``; always reaped. Says how it ended."""
    if popen.poll() is not None:
        return f"had exited ({popen.returncode})"
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGTERM)
    try:
        popen.wait(timeout)
        return "stopped by SIGTERM"
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()
        return f"ignored SIGTERM for {timeout:.0f} s: killed"


@dataclass
class ChainOptions:
    code: str  # PYTHONPATH of the swarmcast children (one directory, or several joined with os.pathsep)
    workdir: Path
    bitrate: int = 1_000_000  # bits/s of the test signal
    as_limit: int = 4 * 1024**3  # RLIMIT_AS of every node, 0 = none
    source_nofile: int | None = None  # RLIMIT_NOFILE soft = hard for the source node
    # The broadcaster's secret: the source serves its transport file under /app/<token>/ and the support node
    # fetches it there, which is how a fixed source knows its real support node (docs/protocol.md); attackers
    # never have it. Old code takes the flag too (it only moves the URL).
    token: str = "hostile-bench-token"
    source_extra: tuple[str, ...] = ()
    support_extra: tuple[str, ...] = ()
    engine_extra: tuple[str, ...] = ()


class Chain:
    def __init__(self, options: ChainOptions) -> None:
        self.options = options
        self.nodes: dict[str, Node] = {}
        self.others: list[subprocess.Popen[bytes]] = []  # the player
        self.stop_notes: dict[str, str] = {}
        self.testsrc_port = free_port()
        self.content_id = b""

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = self.options.code
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def spawn(self, name: str, port: int, args: Sequence[str], *, limits: bool = True,
              nofile: int | None = None, http_port: int | None = None) -> Node:  # fmt: skip
        log = self.options.workdir / f"{name}.log"
        with log.open("ab") as stderr:
            popen = subprocess.Popen(
                _limited([sys.executable, "-m", "swarmcast.cli", *args], self.options.as_limit if limits else 0,
                         nofile), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                cwd=self.options.workdir, env=self.env(), start_new_session=True,
            )  # fmt: skip
        SPAWNED.append(popen)
        node = Node(name, popen, port, log, http_port, tuple(args), limits, nofile)
        self.nodes[name] = node
        return node

    def wait_listening(self, node: Node, port: int | None = None, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not node.alive():
                raise RuntimeError(f"{node.name} exited with {node.popen.returncode}:\n{node.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, port or node.port), timeout=0.5):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{node.name} not listening after {timeout:.0f} s:\n{node.log_tail()}")

    def restart(self, name: str) -> Node:
        """Start a node that died again, same arguments and ports (an attack that goes on after a crash)."""
        old = self.nodes[name]
        stop_process(old.popen)
        node = self.spawn(name, old.port, old.args, limits=old.limits, nofile=old.nofile, http_port=old.http_port)
        self.wait_listening(node, node.http_port)
        return node

    def start_testsrc(self) -> Node:
        kbps = f"{self.options.bitrate // 1000}k"
        args = ["testsrc", "--port", str(self.testsrc_port), "--bitrate", kbps, "--size", "320x180", "--fps", "25"]
        node = self.spawn("testsrc", self.testsrc_port, args, limits=False)
        self.wait_listening(node)
        return node

    def stop_testsrc(self) -> None:
        node = self.nodes.get("testsrc")
        if node is not None:
            stop_process(node.popen)

    def start(self) -> None:
        w = self.options.workdir
        self.start_testsrc()
        port = free_port()
        # The chain of tests/integration/chain.py, but the source's reconnect interval left at its default:
        # the source-outage attack measures what an operator gets out of the box. --service-remote-access on both
        # nodes: the HTTP attacks come from other addresses and are meant to meet the HTTP budgets, not the web
        # interface's loopback-only rule (node/webaccess.py), which would close them at their first bytes.
        source = self.spawn("source", port, [
            "node", "source", "--bind", HOST, "--port", str(port), "--service-remote-access",
            "--source", f"http://{HOST}:{self.testsrc_port}/stream.ts", "--title", "Hostile bench",
            "--name", "hostile", "--publish-dir", str(w / "publish"), "--metadata-dir", str(w / "meta"),
            "--pid-file-dir", str(w), "--service-access-token", self.options.token, *self.options.source_extra,
        ], nofile=self.options.source_nofile)  # fmt: skip
        self.wait_listening(source)
        self._wait_published(source)
        port = free_port()
        support = self.spawn("support", port, [
            "node", "support", "--bind", HOST, "--port", str(port), "--url", self.source_transport_url,
            "--service-remote-access", "--pid-file-dir", str(w), *self.options.support_extra,
        ])  # fmt: skip
        http_port, p2p_port = free_port(), free_port()
        engine = self.spawn("engine", p2p_port, [
            "engine", "--http-port", str(http_port), "--port", str(p2p_port), "--bind", HOST,
            "--pid-file-dir", str(w), "--startup-timeout", "20", *self.options.engine_extra,
        ], http_port=http_port)  # fmt: skip
        self.wait_listening(support)
        self.wait_listening(engine, http_port)
        self.content_id = self._ask_content_id()

    def _wait_published(self, source: Node) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not source.alive():
                raise RuntimeError(f"source exited:\n{source.log_tail()}")
            if any((self.options.workdir / "publish").glob("*.acelive")):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the source published no transport file:\n{source.log_tail()}")

    def _ask_content_id(self) -> bytes:
        """The content id, from the engine's own API (``format=json`` answers the infohash), the session then
        stopped: the bench decodes no transport file itself, so it depends on no bencode library."""
        query = urllib.parse.urlencode({"url": self.support_transport_url, "format": "json"})
        deadline = time.monotonic() + START_TIMEOUT
        error = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.engine_api}/ace/getstream?{query}", timeout=10) as answer:
                    info = json.loads(answer.read())["response"]
                with contextlib.suppress(OSError), urllib.request.urlopen(info["command_url"] + "?method=stop",
                                                                          timeout=5):  # fmt: skip
                    pass
                return bytes.fromhex(info["infohash"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                time.sleep(0.5)
        raise RuntimeError(f"the engine gave no content id for {self.support_transport_url}: {error}")

    @property
    def source_transport_url(self) -> str:
        return f"http://{HOST}:{self.nodes['source'].port}/app/{self.options.token}/get_transport_file?format=raw"

    @property
    def support_transport_url(self) -> str:
        return f"http://{HOST}:{self.nodes['support'].port}/app/get_transport_file"

    @property
    def engine_api(self) -> str:
        return f"http://{HOST}:{self.nodes['engine'].http_port}"

    @property
    def player_url(self) -> str:
        return f"{self.engine_api}/ace/getstream?url={urllib.parse.quote(self.support_transport_url, safe='')}"

    def start_player(self, out: Path, max_seconds: float) -> subprocess.Popen[bytes]:
        log = self.options.workdir / "player.log"
        env = dict(os.environ)
        with log.open("ab") as stderr:
            popen = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "player", self.player_url, str(out),
                 str(max_seconds)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                env=env, start_new_session=True,
            )  # fmt: skip
        SPAWNED.append(popen)
        self.others.append(popen)
        return popen

    def stop_all(self) -> None:
        for popen in self.others:
            stop_process(popen, 2.0)
        for name in ("engine", "support", "source", "testsrc"):
            node = self.nodes.get(name)
            if node is not None:
                self.stop_notes[name] = stop_process(node.popen)


# --- the honest player -------------------------------------------------------------------------------------------

RECONNECT_DELAY = 1.0
PLAYER_READ_TIMEOUT = 10.0


CLOCK_MAGIC = b"SWCLK1"  # testsrc's clock packets (swarmcast.media.ts): wall time in µs of each GOP
_CLOCK_AT = 4  # the magic follows the 4-byte TS header


def _clock_stamps(buf: bytes) -> tuple[list[float], bytes]:
    """testsrc's wall-clock stamps (s) in ``buf``, and the tail to keep for a packet cut between two chunks."""
    stamps: list[float] = []
    start = 0
    while True:
        at = buf.find(CLOCK_MAGIC, start)
        if at < 0 or at + len(CLOCK_MAGIC) + 8 > len(buf):
            break
        start = at + 1
        if at >= _CLOCK_AT and buf[at - _CLOCK_AT] == 0x47:
            stamps.append(int.from_bytes(buf[at + len(CLOCK_MAGIC) : at + len(CLOCK_MAGIC) + 8], "big") / 1e6)
    return stamps, buf[max(len(buf) - 24, start) :]


async def _player_main(url: str, out: Path, max_seconds: float) -> None:
    import aiohttp

    until = time.monotonic() + max_seconds
    with out.open("w", buffering=1) as sink:
        timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_read=PLAYER_READ_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < until:
                sink.write(f"C {time.monotonic():.4f}\n")
                reason = "end"
                tail = b""
                try:
                    async with session.get(url) as response:
                        if response.status != 200:
                            reason = f"HTTP{response.status}"
                        else:
                            async for chunk in response.content.iter_any():
                                now = time.monotonic()
                                sink.write(f"D {now:.4f} {len(chunk)}\n")
                                stamps, tail = _clock_stamps(tail + chunk)
                                for stamp in stamps:
                                    sink.write(f"S {now:.4f} {time.time():.4f} {stamp:.4f}\n")
                                if now >= until:
                                    break
                except (aiohttp.ClientError, TimeoutError, OSError) as error:
                    reason = type(error).__name__
                sink.write(f"E {time.monotonic():.4f} {reason}\n")
                await asyncio.sleep(RECONNECT_DELAY)


@dataclass
class PlayerLog:
    data: list[tuple[float, int]] = field(default_factory=list)
    connects: list[float] = field(default_factory=list)
    ends: list[tuple[float, str]] = field(default_factory=list)
    stamps: list[tuple[float, float, float]] = field(default_factory=list)  # (arrival mono, arrival wall, stamp)

    @classmethod
    def read(cls, path: Path) -> PlayerLog:
        log = cls()
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                parts = line.split()
                with contextlib.suppress(ValueError, IndexError):
                    if parts[0] == "D":
                        log.data.append((float(parts[1]), int(parts[2])))
                    elif parts[0] == "C":
                        log.connects.append(float(parts[1]))
                    elif parts[0] == "S":
                        log.stamps.append((float(parts[1]), float(parts[2]), float(parts[3])))
                    elif parts[0] == "E":
                        log.ends.append((float(parts[1]), parts[2]))
        return log


def player_phase(log: PlayerLog, start: float, end: float, stall_gap: float) -> dict[str, Any]:
    """Bytes, throughput, gaps between data (the longest, and those over ``stall_gap``) within [start, end].

    A gap is the time between two chunks (or from the phase start / to the phase end) clipped to the phase; a
    stream that ended and came back counts as one gap from its last chunk to the next one.
    """
    times = [t for t, _ in log.data]
    nbytes = sum(n for t, n in log.data if start <= t < end)
    before = [t for t in times if t < start]
    points = [max(before[-1], start) if before else start] + [t for t in times if start <= t < end] + [end]
    gaps = [(b - a) for a, b in itertools.pairwise(points)]
    # The open gap at the start is clipped to the phase; the whole run since the last chunk is not ours.
    stalls = [g for g in gaps if g > stall_gap]
    span = max(end - start, 1e-9)
    delays = [wall - stamp for mono, wall, stamp in log.stamps if start <= mono < end]
    return {
        "delay_max_s": round(max(delays), 2) if delays else None,  # testsrc's GOP stamp -> player
        "bytes": nbytes,
        "throughput_Bps": round(nbytes / span),
        "stalls": len(stalls),
        "stall_seconds": round(sum(stalls), 2),
        "longest_gap_s": round(max(gaps), 2) if gaps else None,
        "reconnects": sum(1 for t in log.connects if start <= t < end),
        "stream_ends": [r for t, r in log.ends if start <= t < end][:10],
    }


# --- sampling the nodes ------------------------------------------------------------------------------------------


def _attacker_side(conn: Any) -> bool:
    """A connection to or from an attacker host: loopback but not 127.0.0.1 on the far side."""
    raddr = getattr(conn, "raddr", None)
    ip = getattr(raddr, "ip", None) if raddr else None
    return isinstance(ip, str) and ip.startswith("127.") and ip != HOST


@dataclass
class Sample:
    t: float
    alive: bool
    rss: int = 0
    cpu: float = 0.0
    fds: int = 0
    attacker_conns: int = 0
    conns: int = 0
    hwm: int = 0  # VmHWM: the highest RSS since the process started (catches peaks between two samples)


def _vm_hwm(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class Sampler:
    def __init__(self, chain: Chain, roles: Sequence[str]) -> None:
        self.chain = chain
        self.roles = list(roles)
        self.samples: dict[str, list[Sample]] = {role: [] for role in roles}
        self._procs: dict[str, psutil.Process] = {}

    def sample_once(self) -> None:
        now = time.monotonic()
        for role in self.roles:
            node = self.chain.nodes.get(role)
            if node is None:
                continue
            if not node.alive():
                self.samples[role].append(Sample(now, False))
                continue
            try:
                proc = self._procs.get(role)
                if proc is None or proc.pid != node.pid:
                    proc = self._procs[role] = psutil.Process(node.pid)
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss = proc.memory_info().rss
                    fds = proc.num_fds()
                conns = proc.net_connections(kind="tcp4")
                self.samples[role].append(Sample(now, True, rss, times.user + times.system, fds,
                                                 sum(1 for c in conns if _attacker_side(c)), len(conns),
                                                 _vm_hwm(node.pid)))  # fmt: skip
            except (psutil.Error, OSError):
                self.samples[role].append(Sample(now, node.alive()))

    async def run(self, until: float) -> None:
        while time.monotonic() < until:
            await asyncio.to_thread(self.sample_once)
            await asyncio.sleep(SAMPLE_INTERVAL)

    def phase(self, role: str, start: float, end: float) -> dict[str, Any]:
        inside = [s for s in self.samples.get(role, []) if start <= s.t <= end]
        live = [s for s in inside if s.alive]
        node = self.chain.nodes.get(role)
        out: dict[str, Any] = {
            "alive_at_end": bool(inside[-1].alive) if inside else (node is not None and node.alive()),
            "rss_max_mb": round(max(s.rss for s in live) / 2**20, 1) if live else None,
            "rss_peak_mb": round(max(s.hwm for s in live) / 2**20, 1) if live else None,  # VmHWM, since start
            "fds_max": max(s.fds for s in live) if live else None,
            "conns_max": max(s.conns for s in live) if live else None,
            "attacker_conns_max": max(s.attacker_conns for s in live) if live else None,
            "attacker_conns_end": live[-1].attacker_conns if live else None,
            "cpu_pct": None,
        }
        if len(live) >= 2 and live[-1].t > live[0].t:
            out["cpu_pct"] = round(100 * (live[-1].cpu - live[0].cpu) / (live[-1].t - live[0].t), 1)
        if node is not None and node.popen.poll() is not None:
            out["exit_code"] = node.popen.returncode
        return out


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "player":
    with contextlib.suppress(KeyboardInterrupt):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        asyncio.run(_player_main(sys.argv[2], Path(sys.argv[3]), float(sys.argv[4])))
