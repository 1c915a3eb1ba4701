"""Swarm benchmark: testsrc -> source node -> S support nodes -> N viewer engines -> N players, on loopback.

    python bench/swarm.py --viewers 10 --support 2 --bitrate 2M --duration 60 --out /tmp/bench10

Every node is a real ``swarmcast`` process; the players are asyncio tasks in this process. See
docs/benchmarks.md for what each figure means and how it is measured. With ``--baseline nginx``, after the swarm
phase the nodes are stopped and bench/baseline_nginx.py runs an nginx RTMP -> HLS origin fed the same test signal,
with the same number of players, for the same time; both are printed side by side.

With ``--player hls`` the viewers' players read the engine's HLS output (``/ace/manifest.m3u8``, ~1 s segments)
instead of ``/ace/getstream``, played and measured as the nginx baseline's HLS players are (bench/hls_player.py):

    python bench/swarm.py --viewers 5 --support 1 --player hls --baseline nginx --bitrate 1M --size 320x180 \
        --fps 25 --duration 40 --out /tmp/bench-hls

Start nodes (docs/benchmarks.md, "Start nodes"): ``--support-max-peers`` makes the broadcaster's nodes small so the
swarm is full, ``--late-viewers L`` players arrive ``--late-after`` seconds after the ramp (one every
``--late-interval`` s) and their startup is reported on its own, and ``--startup-nodes K`` adds K start nodes
(``swarmcast node startup``), written into the transport file (``--startup-node``), which engines dial first while
they have not started:

    python bench/swarm.py --viewers 20 --late-viewers 8 --late-after 15 --late-interval 4 --support 2 \
        --support-max-peers 6 --startup-nodes 1 --bitrate 1M --size 320x180 --fps 25 --duration 60 --out /tmp/b
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import shutil
import signal
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.baseline_nginx import run_hls_baseline
from bench.common import (
    HOST,
    Child,
    Processes,
    SocketLedger,
    StreamStats,
    StreamWatcher,
    free_port,
    percentile,
    playout,
)
from bench.hls_player import HlsCounters, play_hls

DEFAULT_MIX = "0:0.2,0.5:0.2,1:0.2,2:0.2,3:0.2"
BUFFER_S = 2.0


def parse_rate(text: str) -> int:
    mult = {"k": 1_000, "M": 1_000_000, "G": 1_000_000_000}
    return int(float(text[:-1]) * mult[text[-1]]) if text[-1] in mult else int(text)


def parse_mix(text: str) -> list[tuple[float, float]]:
    """``MULT:WEIGHT,...``: upload capacity as a multiple of the bitrate, and the share of viewers with it."""
    out = []
    for item in text.split(","):
        mult, _, weight = item.partition(":")
        out.append((float(mult), float(weight or 1)))
    return out


def upload_flags(multiple: float, bitrate: int) -> list[str]:
    """A home uplink of ``multiple`` x the stream: the engine's byte-rate limit; 0 means it uploads nothing."""
    if multiple <= 0:
        return ["--upload-slots", "0"]
    return ["--upload-limit", str(max(1, round(multiple * bitrate / 8 / 1000)))]


# The engines' HTTP clients (transport-file fetch, tracker announces) still connect from 127.0.0.1 whatever their
# --bind, so to the broadcaster's nodes 100 engines look like one address on the HTTP side: lift the per-address
# HTTP limits there (peer connections keep the defaults: they come from each engine's own address).
BROADCASTER_ADMISSION = ["--max-connection-rate-per-ip", "1000", "--max-pending-per-ip", "256",
                         "--max-http-connections-per-ip", "256"]  # fmt: skip


# --one-address: every engine on 127.0.0.1, so that a tracker can introduce engines to each other (an engine's
# announce leaves from 127.0.0.1 whatever its --bind, and the tracker lists the address it came from: with an engine
# on 127.0.x.y that address reaches nobody, and engines meet only through PEX). Per-address limits are lifted
# everywhere, since every peer then shares one address.
ONE_ADDRESS_ADMISSION = ["--max-connection-rate-per-ip", "1000", "--max-pending-per-ip", "256",
                         "--max-http-connections-per-ip", "256", "--max-connections-per-ip", "1000",
                         "--max-peers-per-ip", "1000"]  # fmt: skip


def engine_address(vid: int) -> str:
    """Each engine its own loopback address, as each viewer has its own on the internet (127.0.0.1 is the
    broadcaster's: testsrc, source and support nodes), so the nodes' per-address admission limits see what they
    would in production."""
    return f"127.0.{1 + vid // 250}.{2 + vid % 250}"


def since_request(stats: StreamStats, wall: float | None) -> float | None:
    """Seconds from the player's request to ``wall``; None if it never happened (NaN: gave up on decoding)."""
    if wall is None or math.isnan(wall):
        return None
    return wall - stats.requested_wall


class Viewer:
    def __init__(self, vid: int, child: Child, http_port: int, url: str, upload_multiple: float,
                 upload_flags: list[str], *, late: bool = False) -> None:  # fmt: skip
        self.vid = vid
        self.late = late  # a newcomer: its player starts once the swarm is full
        self.child = child
        self.http_port = http_port
        self.url = url
        self.upload_multiple = upload_multiple
        self.upload_flags = upload_flags
        self.stats = StreamStats(requested_wall=0.0)
        self.task: asyncio.Task[None] | None = None
        self.engine_stat: dict[str, Any] = {}
        self.stat_url: str | None = None
        self.player = "ts"  # or "hls": /ace/manifest.m3u8 instead of /ace/getstream
        self.hls: HlsCounters | None = None


async def play(viewer: Viewer, session: aiohttp.ClientSession, until: float) -> None:
    st = viewer.stats
    watcher = StreamWatcher(st)
    st.requested_wall = time.time()
    quoted = urllib.parse.quote(viewer.url, safe="")
    api = f"http://{HOST}:{viewer.http_port}"
    hls = viewer.player == "hls"
    try:
        path = "/ace/manifest.m3u8" if hls else "/ace/getstream"
        async with session.get(f"{api}{path}?url={quoted}&format=json") as resp:
            body = await resp.json()
        info = body.get("response") or {}
        if not info:
            st.error = str(body.get("error"))
            return
        viewer.stat_url = info["stat_url"]
        if hls:  # an HLS player of the engine's playlist (bench/hls_player.py), measured as the nginx baseline's
            counters = await play_hls(info["playback_url"], st, until)
            viewer.hls = counters
            if st.first_frame_wall is None:
                st.error = counters.last_error or "no video frame decoded"
            return
        timeout = aiohttp.ClientTimeout(total=None, sock_read=30)
        async with session.get(info["playback_url"], timeout=timeout) as resp:
            if resp.status != 200:
                st.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                return
            async for chunk in resp.content.iter_any():
                watcher.feed(chunk, time.time())
                if time.monotonic() >= until:
                    break
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as error:
        st.error = f"{type(error).__name__}: {error}"
    finally:
        st.ended_wall = time.time()


async def reference_tap(url: str, stats: StreamStats, until: float) -> None:
    watcher = StreamWatcher(stats)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=30)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
        async for chunk in resp.content.iter_any():
            watcher.feed(chunk, time.time())
            if time.monotonic() >= until:
                break
    stats.ended_wall = time.time()


async def poll_stat(viewer: Viewer, session: aiohttp.ClientSession) -> None:
    if viewer.stat_url is None or viewer.child.process.poll() is not None:
        return
    try:
        async with session.get(viewer.stat_url, timeout=aiohttp.ClientTimeout(total=3)) as resp:
            body = await resp.json()
        if isinstance(body.get("response"), dict):
            viewer.engine_stat = body["response"]
    except (aiohttp.ClientError, TimeoutError, ValueError):
        pass


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.procs = Processes(workdir)
        self.ledger = SocketLedger()
        self.viewers: list[Viewer] = []
        self.rng = random.Random(args.seed)
        self.mix = parse_mix(args.viewer_upload)
        self.transport_urls: list[str] = []
        self.bitrate = parse_rate(args.bitrate)
        self.cpu_samples: list[float] = []
        self.churn_events = 0
        self.source_support_nodes: int | None = None
        self.startup_nodes: list[Child] = []
        self.handed_off: int | None = None  # peers the start nodes handed off for newcomers
        self.node_admission = ONE_ADDRESS_ADMISSION if args.one_address else BROADCASTER_ADMISSION

    def start_infra(self) -> None:
        a, p = self.args, self.procs
        port = free_port()
        self.testsrc = p.spawn("testsrc", "testsrc", port, "testsrc", "--port", str(port), "--bitrate", a.bitrate,
                               "--size", a.size, "--fps", str(a.fps))  # fmt: skip
        p.wait_ports([self.testsrc], 30)
        port = free_port()
        # Support status is granted by the source, not claimed: it is told its support nodes' addresses.
        support_ports = [free_port() for _ in range(a.support)]
        startup_ports = [free_port() for _ in range(a.startup_nodes)]
        # Start nodes are the broadcaster's too: the same credential as support nodes.
        authorised = [arg for p_ in support_ports + startup_ports for arg in ("--support-node", f"{HOST}:{p_}")]
        # --startup-node writes them into the transport file, so that engines dial them first while they have not
        # started (swarm/dialer.py).
        authorised += [arg for p_ in startup_ports for arg in ("--startup-node", f"{HOST}:{p_}")]
        small = ["--max-peers", str(a.support_max_peers)] if a.support_max_peers else []
        self.source = p.spawn(
            "source", "source", port, "node", "source", "--bind", HOST, "--port", str(port),
            "--source", f"http://{HOST}:{self.testsrc.port}/stream.ts", "--title", "bench", "--name", "bench",
            "--publish-dir", str(self.workdir / "publish"), "--metadata-dir", str(self.workdir / "meta"),
            "--pid-file-dir", str(self.workdir), *self.node_admission, *authorised,
        )  # fmt: skip
        p.wait_ports([self.source], 30)
        transport = f"http://{HOST}:{self.source.port}/app/get_transport_file?format=raw"
        self.supports = []
        for i, port in enumerate(support_ports):
            self.supports.append(p.spawn(f"support{i}", "support", port, "node", "support", "--bind", HOST,
                                         "--port", str(port), "--url", transport,
                                         "--pid-file-dir", str(self.workdir), *self.node_admission,
                                         *small))  # fmt: skip
        startup_max = a.startup_max_peers or a.support_max_peers
        for i, port in enumerate(startup_ports):
            self.startup_nodes.append(p.spawn(
                f"startup{i}", "startup", port, "node", "startup", "--bind", HOST, "--port", str(port),
                "--url", transport, "--pid-file-dir", str(self.workdir), *self.node_admission,
                *(["--max-peers", str(startup_max)] if startup_max else []),
                *(["--startup-handoff-bytes", str(a.startup_handoff_bytes)] if a.startup_handoff_bytes else []),
            ))  # fmt: skip
        p.wait_ports(self.supports + self.startup_nodes, 30)
        self.transport_urls = [f"http://{HOST}:{s.port}/app/get_transport_file" for s in self.supports]
        self.transport_urls.append(f"http://{HOST}:{self.source.port}/app/get_transport_file")

    def spawn_viewer(self, vid: int, *, late: bool = False) -> Viewer:
        total = sum(w for _m, w in self.mix)
        pick, acc, multiple = self.rng.random() * total, 0.0, self.mix[-1][0]
        for m, w in self.mix:
            acc += w
            if pick < acc:
                multiple = m
                break
        flags = upload_flags(multiple, self.bitrate)
        http_port, p2p_port = free_port(), free_port()
        one = self.args.one_address
        child = self.procs.spawn(f"engine{vid}", "engine", http_port, "engine", "--http-port", str(http_port),
                                 "--port", str(p2p_port), "--bind", HOST if one else engine_address(vid),
                                 *(ONE_ADDRESS_ADMISSION if one else []),
                                 "--pid-file-dir", str(self.workdir),
                                 *flags, "--startup-timeout", "30")  # fmt: skip
        # Newcomers take the support nodes' transport files like everybody: the source wrote the start nodes into
        # it (--startup-node), and an engine that has not started dials those first (swarm/dialer.py).
        url = self.transport_urls[vid % len(self.transport_urls)]
        viewer = Viewer(vid, child, http_port, url, multiple, flags, late=late)
        viewer.player = self.args.player
        self.viewers.append(viewer)
        return viewer

    def role_of(self) -> dict[int, str]:
        roles = {c.process.pid: c.role for c in self.procs.children}
        import os

        roles[os.getpid()] = "player"
        return roles

    async def run(self) -> dict[str, Any]:
        a = self.args
        self.start_infra()
        first = [self.spawn_viewer(i) for i in range(a.viewers)]
        late = [self.spawn_viewer(a.viewers + i, late=True) for i in range(a.late_viewers)]
        self.procs.wait_ports([v.child for v in first + late], 60 + a.viewers + a.late_viewers)
        self.ledger.start_window()
        t0 = time.monotonic()
        for child in self.procs.children:
            child.sample()
            child.cpu_seconds_at_start, child.window_start = child.cpu_seconds, t0
        self.own_cpu_at_start = sum(psutil.Process().cpu_times()[:2])
        end = t0 + a.ramp + a.duration
        wall0 = time.time()
        self.reference = StreamStats(requested_wall=wall0)
        ref_task = asyncio.create_task(
            reference_tap(f"http://{HOST}:{self.testsrc.port}/stream.ts", self.reference, end)
        )
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            for i, viewer in enumerate(first):
                start_at = t0 + (a.ramp * i / max(1, len(first)))
                viewer.task = asyncio.create_task(self._delayed(viewer, session, start_at, end))
            for i, viewer in enumerate(late):  # newcomers, once the swarm is full
                start_at = t0 + a.ramp + a.late_after + i * a.late_interval
                viewer.task = asyncio.create_task(self._delayed(viewer, session, start_at, end))
            next_churn = t0 + a.ramp + 60.0 / a.churn if a.churn > 0 else float("inf")
            next_vid = a.viewers + a.late_viewers
            psutil.cpu_percent(None)
            while time.monotonic() < end:
                await asyncio.sleep(1.0)
                self.ledger.sample()
                self.cpu_samples.append(psutil.cpu_percent(None))
                for child in self.procs.children:
                    if child.stopped is None:
                        child.sample()
                await asyncio.gather(*(poll_stat(v, session) for v in self.viewers if v.child.stopped is None))
                if time.monotonic() >= next_churn and time.monotonic() < end - 5:
                    await self._churn(session, next_vid, end)
                    next_vid += 1
                    next_churn += 60.0 / a.churn
                self._progress(t0)
            self.ledger.sample()
            # Which support nodes the source counts as such (holders of the credential it granted them).
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, KeyError):
                source_stat = f"http://{HOST}:{self.source.port}/app/stat"
                async with session.get(source_stat, timeout=aiohttp.ClientTimeout(total=3)) as resp:
                    self.source_support_nodes = len((await resp.json())["result"]["support_nodes"])
            if self.startup_nodes:
                self.handed_off = 0
                for node in self.startup_nodes:
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, KeyError):
                        stat_url = f"http://{HOST}:{node.port}/app/stat"
                        async with session.get(stat_url, timeout=aiohttp.ClientTimeout(total=3)) as resp:
                            self.handed_off += int((await resp.json())["result"]["handed_off"])
            for v in self.viewers:
                if v.task is not None:
                    v.task.cancel()
            await asyncio.gather(*(v.task for v in self.viewers if v.task), return_exceptions=True)
        ref_task.cancel()
        await asyncio.gather(ref_task, return_exceptions=True)
        for child in self.procs.children:
            child.sample()
        print()
        result = self.report(wall0, time.monotonic() - t0)
        if a.baseline == "nginx":
            # The client-server run gets the machine to itself, like the swarm had: stop every node but testsrc.
            for child in reversed(self.procs.children):
                if child is not self.testsrc:
                    await asyncio.to_thread(self.procs.stop, child)
            print(f"baseline: nginx RTMP -> HLS origin, {a.viewers} HLS players, {a.ramp + a.duration:.0f} s")
            result["baseline"] = await run_hls_baseline(
                f"http://{HOST}:{self.testsrc.port}/stream.ts", a.viewers, a.duration, a.ramp,
                self.workdir / "baseline",
            )  # fmt: skip
        return result

    async def _delayed(self, viewer: Viewer, session: aiohttp.ClientSession, start_at: float, end: float) -> None:
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        await play(viewer, session, end)

    async def _churn(self, session: aiohttp.ClientSession, vid: int, end: float) -> None:
        live = [v for v in self.viewers if v.child.stopped is None and v.task is not None]
        if not live:
            return
        leaving = self.rng.choice(live)
        await poll_stat(leaving, session)
        self.ledger.sample()
        if leaving.task is not None:
            leaving.task.cancel()
            await asyncio.gather(leaving.task, return_exceptions=True)
        await asyncio.to_thread(self.procs.stop, leaving.child)
        new = self.spawn_viewer(vid)
        await asyncio.to_thread(self.procs.wait_ports, [new.child], 60)
        new.task = asyncio.create_task(play(new, session, end))
        self.churn_events += 1

    def _progress(self, t0: float) -> None:
        playing = sum(1 for v in self.viewers if v.stats.first_frame_wall and v.child.stopped is None)
        delays = [v.stats.stamps[-1][1] - v.stats.stamps[-1][0] for v in self.viewers
                  if v.stats.stamps and v.child.stopped is None]  # fmt: skip
        src = sum(s for (pid, _l, _r), (s, _x) in self.ledger.sockets.items() if pid == self.source.process.pid)
        # Everything the broadcaster's nodes sent (to each other too: the report's ratio counts only what leaves them).
        nodes = {c.process.pid for c in (self.source, *self.supports)}
        ours = sum(s for (pid, _l, _r), (s, _x) in self.ledger.sockets.items() if pid in nodes)
        cpu = self.cpu_samples[-1] if self.cpu_samples else 0.0
        p50 = percentile(delays, 50)
        print(f"\r t={time.monotonic() - t0:5.0f}s playing {playing}/{len(delays) or 0}"
              f"  delay p50 {p50 if p50 is None else round(p50, 2)} s"
              f"  source+support up {ours / 1e6:7.1f} MB (source {src / 1e6:.1f})"
              f"  cpu {cpu:5.1f}%  churn {self.churn_events}   ", end="", flush=True)  # fmt: skip

    def report(self, wall0: float, elapsed: float) -> dict[str, Any]:
        a = self.args
        ref_stamps = [s for s, _t in self.reference.stamps]
        ref_delays = [t - s for s, t in self.reference.stamps]
        ref_bytes_per_s = self.reference.bytes / max(1e-6, (self.reference.ended_wall or time.time()) - wall0)
        viewers_out: list[dict[str, Any]] = []
        all_delays: list[float] = []
        for v in self.viewers:
            st = v.stats
            end_wall = st.ended_wall or time.time()
            delays = [t - s for s, t in st.stamps]
            all_delays += delays
            po = playout(st.stamps, ref_stamps, BUFFER_S, end_wall)
            sent, recv = self.ledger.per_pid(v.child.process.pid, exclude_local_port=v.http_port)
            payload = int(v.engine_stat.get("downloaded", 0)) + int(v.engine_stat.get("uploaded", 0))
            viewers_out.append({
                "id": v.vid, "late": v.late, "upload_multiple": v.upload_multiple,
                "upload_flags": " ".join(v.upload_flags), "transport_url": v.url,
                "error": st.error, "bytes": st.bytes,
                "startup_s": since_request(st, st.first_frame_wall),
                "first_keyframe_s": since_request(st, st.first_keyframe_wall),
                "first_byte_s": since_request(st, st.first_byte_wall),
                "delay_p50": percentile(delays, 50), "delay_p95": percentile(delays, 95),
                "delay_max": max(delays) if delays else None,
                # As in bench/baseline_nginx.py: the player model starts BUFFER_S after its first GOP arrived.
                "playout_delay": (st.stamps[0][1] - st.stamps[0][0] + BUFFER_S + float(po["stall_seconds"] or 0.0))
                if st.stamps else None,
                "delays": [[round(s - wall0, 3), round(d, 3)] for (s, _t), d in zip(st.stamps, delays, strict=True)],
                **po,
                "engine_downloaded": v.engine_stat.get("downloaded"), "engine_uploaded": v.engine_stat.get("uploaded"),
                "engine_skipped_pieces": v.engine_stat.get("skipped_pieces"),
                "p2p_wire_sent": sent, "p2p_wire_received": recv,
                "control_overhead": None if sent + recv == 0 else max(0.0, 1 - payload / (sent + recv)),
                "cpu_seconds": round(v.child.cpu_seconds, 2), "peak_rss": v.child.peak_rss,
                "churned_out": v.child.stopped is not None and v.task is not None and v.task.cancelled(),
                "player": v.player,
                "hls_segments": v.hls.segments if v.hls else None,
                "hls_skipped_segments": v.hls.skipped_segments if v.hls else None,
                "hls_http_errors": v.hls.http_errors if v.hls else None,
            })  # fmt: skip
        flows = self.ledger.flows(self.role_of())
        source_up = sum(b for (src, dst), b in flows.items() if src == "source" and dst in {"support", "engine"})
        # Source and support nodes to viewers' engines: all the broadcaster's own machines send out.
        broadcaster_up = source_up + sum(b for (src, dst), b in flows.items()
                                         if src in {"support", "startup"} and dst == "engine")  # fmt: skip
        stream_bytes = ref_bytes_per_s * elapsed
        nominal_bytes = self.bitrate / 8 * elapsed
        to_engines = {k[0]: b for k, b in flows.items() if k[1] == "engine"}
        engine_in = sum(b for src, b in to_engines.items() if src in {"source", "support", "startup", "engine"})
        roles: dict[str, dict[str, float]] = {}
        for child in self.procs.children:
            # Over the measured window (or the part of it the child lived): start-up work is not steady state.
            window = ((child.stopped or time.monotonic()) - (child.window_start or child.started)) or 1.0
            r = roles.setdefault(child.role, {"count": 0, "cpu_pct_mean": 0.0, "peak_rss_max_mb": 0.0})
            r["count"] += 1
            r["cpu_pct_mean"] += 100 * (child.cpu_seconds - child.cpu_seconds_at_start) / window
            r["peak_rss_max_mb"] = max(r["peak_rss_max_mb"], child.peak_rss / 1e6)
        for r in roles.values():
            r["cpu_pct_mean"] = round(r["cpu_pct_mean"] / r["count"], 1)
        own_cpu = sum(psutil.Process().cpu_times()[:2]) - self.own_cpu_at_start
        roles["players (bench process)"] = {"count": 1, "cpu_pct_mean": round(100 * own_cpu / elapsed, 1),
                                            "peak_rss_max_mb": psutil.Process().memory_info().rss / 1e6}  # fmt: skip
        wire = sum(x["p2p_wire_sent"] + x["p2p_wire_received"] for x in viewers_out)
        payload_all = sum(int(x["engine_downloaded"] or 0) + int(x["engine_uploaded"] or 0) for x in viewers_out)
        startups = [x["startup_s"] for x in viewers_out if x["startup_s"] is not None]
        early_startups = [x["startup_s"] for x in viewers_out if x["startup_s"] is not None and not x["late"]]
        late_startups = [x["startup_s"] for x in viewers_out if x["startup_s"] is not None and x["late"]]
        playouts = [x["playout_delay"] for x in viewers_out if x["playout_delay"] is not None]
        cont_abs = [x["continuity_abs"] for x in viewers_out if x["continuity_abs"] is not None]
        cont_rel = [x["continuity_rel"] for x in viewers_out if x["continuity_rel"] is not None]
        overall = {
            "viewers": a.viewers, "player": a.player, "support": a.support, "bitrate": self.bitrate,
            "duration": a.duration,
            "ramp": a.ramp, "churn_per_min": a.churn, "churn_events": self.churn_events,
            "elapsed_s": round(elapsed, 1), "buffer_s": BUFFER_S,
            "measured_stream_bytes_per_s": round(ref_bytes_per_s),
            # The reference tap reads testsrc directly: a late stamp here is the test signal's (a busy machine),
            # not the swarm's; the players see it too.
            "reference_delay_p50": percentile(ref_delays, 50), "reference_delay_max": max(ref_delays, default=None),
            "players_started": len(startups), "players_total": len(viewers_out),
            "startup_p50": percentile(startups, 50), "startup_p95": percentile(startups, 95),
            "startup_max": max(startups, default=None),
            # Start nodes: the newcomers (--late-viewers) apart from the viewers that filled the swarm.
            "late_viewers": a.late_viewers, "late_players_started": len(late_startups),
            "early_startup_p50": percentile(early_startups, 50), "early_startup_p95": percentile(early_startups, 95),
            "late_startup_p50": percentile(late_startups, 50), "late_startup_p95": percentile(late_startups, 95),
            "late_startup_max": max(late_startups, default=None),
            "startup_nodes": a.startup_nodes, "startup_handed_off": self.handed_off,
            "support_max_peers": a.support_max_peers or None,
            "engine_bytes_from_startup": to_engines.get("startup", 0),
            "delay_p50": percentile(all_delays, 50), "delay_p95": percentile(all_delays, 95),
            "delay_max": max(all_delays, default=None),
            "playout_delay_p50": percentile(playouts, 50), "playout_delay_p95": percentile(playouts, 95),
            "playout_delay_max": max(playouts, default=None),
            "continuity_abs_mean": sum(cont_abs) / len(cont_abs) if cont_abs else None,
            "continuity_rel_mean": sum(cont_rel) / len(cont_rel) if cont_rel else None,
            "stalls_total": sum(int(x["stalls"] or 0) for x in viewers_out),
            "stall_seconds_total": round(sum(float(x["stall_seconds"] or 0) for x in viewers_out), 2),
            "source_support_nodes": self.source_support_nodes,
            "source_upload_bytes": source_up,
            "source_upload_ratio": source_up / stream_bytes if stream_bytes else None,
            "source_upload_ratio_nominal": source_up / nominal_bytes if nominal_bytes else None,
            "broadcaster_upload_ratio": broadcaster_up / stream_bytes if stream_bytes else None,
            "engine_bytes_from_source": to_engines.get("source", 0),
            "engine_bytes_from_support": to_engines.get("support", 0),
            "engine_bytes_from_engines": to_engines.get("engine", 0),
            "peer_share": to_engines.get("engine", 0) / engine_in if engine_in else None,
            "control_overhead_engines": max(0.0, 1 - payload_all / wire) if wire else None,
            "flows": {f"{s}->{d}": b for (s, d), b in sorted(flows.items())},
            "roles": roles,
            "cpu_machine_mean_pct": round(sum(self.cpu_samples) / max(1, len(self.cpu_samples)), 1),
            "cpu_machine_max_pct": max(self.cpu_samples, default=None),
            "upload_cap": "engine --upload-limit = multiple x bitrate (KB/s); multiple 0 = --upload-slots 0",
        }  # fmt: skip
        ref = [round(s - wall0, 3) for s in ref_stamps]
        return {"overall": overall, "viewers": viewers_out, "reference_stamps": ref}


def plots(result: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    viewers = result["viewers"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), dpi=70)
    for v in viewers:
        if v["delays"]:
            xs, ys = zip(*v["delays"], strict=True)
            axes[0].plot(xs, ys, lw=0.8)
    axes[0].set(title="source-to-player delay", xlabel="stamp time (s)", ylabel="delay (s)")
    starts = [v["startup_s"] for v in viewers if v["startup_s"] is not None]
    axes[1].hist(starts, bins=20)
    axes[1].set(title="startup (request -> first decoded frame)", xlabel="s", ylabel="players")
    conts = [v["continuity_rel"] for v in viewers if v["continuity_rel"] is not None]
    axes[2].hist(conts, bins=20, range=(0, 1))
    axes[2].set(title=f"continuity (buffer {result['overall']['buffer_s']} s)", xlabel="share on time")
    fig.tight_layout()
    fig.savefig(out / "overview.png")
    plt.close(fig)
    if result.get("baseline"):
        plot_vs_hls(result, out)


def plot_vs_hls(result: dict[str, Any], out: Path) -> None:
    """Delay distributions and the broadcaster's upload, swarm next to the HLS origin."""
    import matplotlib.pyplot as plt

    hls, o = result["baseline"], result["overall"]
    swarm_delays = sorted(d for v in result["viewers"] for _t, d in v["delays"])
    hls_delays = sorted(d for p in hls["per_player"] for _t, d in p["delays"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), dpi=70)
    for label, values in (("swarm", swarm_delays), ("nginx HLS", hls_delays)):
        if values:
            axes[0].plot(values, [i / len(values) for i in range(len(values))], label=label)
    axes[0].set(title="delay at arrival (all keyframes, all players)", xlabel="s", ylabel="share of keyframes")
    axes[0].legend()
    bars = {"swarm: broadcaster\n(source + support)": o["broadcaster_upload_ratio"],
            "swarm: the\nsource alone": o["source_upload_ratio"], "HLS origin": hls["origin_upload_ratio"]}  # fmt: skip
    names = [k for k, v in bars.items() if v is not None]
    axes[1].bar(names, [bars[k] for k in names], color=["tab:blue", "tab:cyan", "tab:orange"][: len(names)])
    axes[1].set(title=f"upload / stream, {o['viewers']} players", ylabel="copies of the stream")
    fig.tight_layout()
    fig.savefig(out / "vs-hls.png")
    plt.close(fig)


def table(o: dict[str, Any]) -> str:
    def f(x: Any, nd: int = 2) -> str:
        return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))

    rows = [
        ("viewers / support / bitrate", f"{o['viewers']} / {o['support']} / {o['bitrate']} b/s"),
        ("players started", f"{o['players_started']}/{o['players_total']}"),
        ("startup p50 / p95 / max (s)", f"{f(o['startup_p50'])} / {f(o['startup_p95'])} / {f(o['startup_max'])}"),
        ("delay p50 / p95 / max (s)", f"{f(o['delay_p50'])} / {f(o['delay_p95'])} / {f(o['delay_max'])}"),
        ("test signal's own delay p50 / max (s)", f"{f(o['reference_delay_p50'])} / {f(o['reference_delay_max'])}"),
        ("continuity abs / rel (mean)", f"{f(o['continuity_abs_mean'], 4)} / {f(o['continuity_rel_mean'], 4)}"),
        ("stalls (count, s)", f"{o['stalls_total']}, {o['stall_seconds_total']}"),
        # The headline: what the broadcaster pays for is all its nodes send (source + support nodes), not the source.
        ("broadcaster upload / stream (source + support nodes)", f(o["broadcaster_upload_ratio"])),
        ("  the source alone / stream",
         f"{f(o['source_upload_ratio'])} (nominal {f(o['source_upload_ratio_nominal'])})"),
        ("viewer bytes from peers", f(o["peer_share"])),
        ("control overhead (engines)", f(o["control_overhead_engines"], 3)),
        ("machine CPU mean / max %", f"{f(o['cpu_machine_mean_pct'], 0)} / {f(o['cpu_machine_max_pct'], 0)}"),
    ]
    if o.get("late_viewers"):
        rows.insert(3, ("late viewers: started, startup p50 / p95 / max (s)",
                        f"{o['late_players_started']}/{o['late_viewers']}, {f(o['late_startup_p50'])} / "
                        f"{f(o['late_startup_p95'])} / {f(o['late_startup_max'])}"))  # fmt: skip
        rows.insert(3, ("first viewers: startup p50 / p95 (s)",
                        f"{f(o['early_startup_p50'])} / {f(o['early_startup_p95'])}"))  # fmt: skip
    if o.get("startup_nodes"):
        rows.append(("start nodes, peers handed off", f"{o['startup_nodes']}, {o['startup_handed_off']}"))
    rows += [(f"{k} x{int(r['count'])} cpu% / peak MB", f"{r['cpu_pct_mean']} / {r['peak_rss_max_mb']:.0f}")
             for k, r in o["roles"].items()]  # fmt: skip
    return "\n".join(f"| {k} | {v} |" for k, v in rows)


def side_by_side(swarm: dict[str, Any], hls: dict[str, Any]) -> str:
    """The swarm and the HLS origin, same signal, same number of players, same time; ratio = HLS / swarm."""

    def f(x: Any, nd: int = 2) -> str:
        return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))

    def ratio(a: Any, b: Any) -> str:
        return f"{b / a:.1f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a > 0 else "-"

    def trio(d: dict[str, Any]) -> str:
        return f"{f(d['p50'])} / {f(d['p95'])} / {f(d['max'])}"

    name = "swarm, engine HLS (1 s segments)" if swarm.get("player") == "hls" else "swarm"
    rows = [("figure", name, "nginx HLS (2 s fragments)", "nginx / swarm"), ("---", "---", "---", "---")]
    rows.append(("players with video", f"{swarm['players_started']}/{swarm['players_total']}",
                 f"{hls['players_with_video']}/{hls['players']}", ""))  # fmt: skip
    for label, key_s, key_h in (("startup", "startup", "startup_s"), ("delay at arrival", "delay", "delay_s"),
                                ("playout delay", "playout_delay", "playout_delay_s")):  # fmt: skip
        s = {"p50": swarm[f"{key_s}_p50"], "p95": swarm[f"{key_s}_p95"], "max": swarm[f"{key_s}_max"]}
        rows.append((f"{label} p50 / p95 / max (s)", trio(s), trio(hls[key_h]), ratio(s["p95"], hls[key_h]["p95"])))
    rows.append(("continuity abs / rel", f"{f(swarm['continuity_abs_mean'])} / {f(swarm['continuity_rel_mean'])}",
                 f"{f(hls['continuity_abs'])} / {f(hls['continuity_rel'])}", ""))  # fmt: skip
    rows.append(("stalls (count, s)", f"{swarm['stalls_total']}, {swarm['stall_seconds_total']}",
                 f"{hls['stalls']}, {hls['stall_seconds']}", ""))  # fmt: skip
    rows.append(("broadcaster upload / stream (source + support nodes; origin)", f(swarm["broadcaster_upload_ratio"]),
                 f(hls["origin_upload_ratio"]), ratio(swarm["broadcaster_upload_ratio"], hls["origin_upload_ratio"])))
    rows.append(("  the source alone / stream", f(swarm["source_upload_ratio"]), "", ""))
    return "\n".join(f"| {' | '.join(r)} |" for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, required=True)
    parser.add_argument("--support", type=int, default=2)
    parser.add_argument("--bitrate", default="2M")
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--ramp", type=float, default=5.0, help="players join spread over this many seconds")
    parser.add_argument("--viewer-upload", default=DEFAULT_MIX, help="MULT:WEIGHT,... (multiples of the bitrate)")
    parser.add_argument("--churn", type=float, default=0.0, help="viewers replaced per minute")
    parser.add_argument("--one-address", action="store_true",
                        help="every engine on 127.0.0.1 (per-address limits lifted) so trackers introduce engines")
    parser.add_argument("--support-max-peers", type=int, default=0,
                        help="the support nodes' --max-peers (0 = the node's default): small makes the swarm full")
    parser.add_argument("--late-viewers", type=int, default=0,
                        help="newcomers whose players start --late-after s after the ramp; startup reported apart")
    parser.add_argument("--late-after", type=float, default=15.0, help="seconds after the ramp (default 15)")
    parser.add_argument("--late-interval", type=float, default=2.0, help="seconds between newcomers (default 2)")
    parser.add_argument("--startup-nodes", type=int, default=0, help="start nodes; newcomers take their transport file")
    parser.add_argument("--startup-max-peers", type=int, default=0, help="start nodes' --max-peers "
                        "(0 = --support-max-peers, or the node's default)")  # fmt: skip
    parser.add_argument("--startup-handoff-bytes", type=int, default=0,
                        help="start nodes' --startup-handoff-bytes (0 = the node's default)")
    parser.add_argument("--player", choices=["ts", "hls"], default="ts",
                        help="what the viewers' players read: ts = /ace/getstream (MPEG-TS), hls = the engine's "
                        "/ace/manifest.m3u8 (~1 s segments), played like the nginx baseline's HLS players")
    parser.add_argument("--baseline", choices=["nginx"], default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    last_newcomer = args.ramp + args.late_after + max(0, args.late_viewers - 1) * args.late_interval
    if args.late_viewers and last_newcomer > args.ramp + args.duration - 10:
        parser.error(f"--duration {args.duration:g} leaves the last newcomer (at {last_newcomer:g} s) under 10 s")
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="swarmcast-bench-"))
    bench = Bench(args, workdir)
    print(f"bench in {workdir}")

    def on_sigterm(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # so the children are stopped below, as on Ctrl-C

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        result = asyncio.run(bench.run())
    except KeyboardInterrupt:
        print("\ninterrupted")
        return 130
    finally:
        bench.procs.stop_all()
        logs = args.out / "logs"
        logs.mkdir(exist_ok=True)
        for log in workdir.glob("*.log"):
            shutil.copy(log, logs / log.name)
        shutil.rmtree(workdir, ignore_errors=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=1))
    plots(result, args.out)
    print(table(result["overall"]))
    if result.get("baseline"):
        print()
        print(side_by_side(result["overall"], result["baseline"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
