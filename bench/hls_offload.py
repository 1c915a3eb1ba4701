"""HLS ingest offload: N engines on one public ("hybrid") HLS broadcast from an nginx-rtmp origin; how many of the
bytes they played came from peers and how many from the origin.

    PYTHONPATH=src python3 -m bench.hls_offload --engines 1,3,6 --duration 20 --support-upload-limit 30

Per run: testsrc -> RTMP -> nginx-rtmp (HLS, 1 s fragments) is the origin (bench/hls_origin.py); ``swarmcast hls
create-transport`` writes the files; the HLS support node (the signer, 127.0.0.1) reads the origin and seeds with
``--upload-limit`` KB/s (below the stream's rate, so the swarm alone cannot carry it: this is the case the hybrid
mode is for); N engines on 127.0.0.10, .11, ... each play /ace/getstream for ``--duration`` s. Reported per N:
each engine's ``downloaded`` (from peers) and ``downloaded_from_origin`` (verified segments fetched from the origin,
node/hls_fallback.py), their sum and the origin's share, and the origin's egress to the engines from nginx's access
log (bytes on the wire, by client address), against what N engines reading HLS directly would have cost, and the
origin's requests per client address. ``--private`` runs a private broadcast instead (``--hide-hls-manifest``,
``--hide-hls-segments``): the engines' addresses must not appear in the origin's log at all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import free_port
from bench.hls_origin import HOST, hls_origin

ENGINE_BASE = 10  # engines on 127.0.0.10, .11, ...


@contextlib.contextmanager
def spawned(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait()


async def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                async with session.get(url) as response:
                    await response.read()
                    return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} did not answer in {timeout:.0f} s")


async def play(url: str, seconds: float) -> int:
    received = 0
    timeout = aiohttp.ClientTimeout(total=seconds + 60, sock_read=30)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}")
        deadline = None
        async for chunk in response.content.iter_chunked(65536):
            deadline = deadline or time.monotonic() + seconds
            received += len(chunk)
            if time.monotonic() >= deadline:
                break
    return received


async def stat(api: str) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(f"{api}/app/stat") as response:
        result = (await response.json())["result"]
    return dict(result[0]) if result else {}


async def one_run(engines: int, duration: float, upload_limit: int, work: Path, *,
                  hidden: bool = False) -> dict[str, Any]:  # fmt: skip
    py = [sys.executable, "-m", "swarmcast.cli"]
    with hls_origin(work) as origin, contextlib.ExitStack() as stack:
        port = free_port()
        public, private = work / "x.acelive", work / "y.acelive"
        create = [*py, "hls", "create-transport", "--url", origin.playlist_url, "--title", "offload", "--name",
                  "offload", "--output-public", str(public), "--output-private", str(private), "--bitrate", "75000",
                  "--tracker", f"http://{HOST}:{port}/announce", *(["--hide-hls-manifest"] if hidden else [])]
        await asyncio.to_thread(subprocess.run, create, check=True, capture_output=True)
        stack.enter_context(spawned([*py, "node", "support", "--bind", HOST, "--port", str(port), "--url",
                                     str(private), "--public-transport-file", str(public), "--state-dir",
                                     str(work / "state"), "--pid-file-dir", str(work), "--upload-limit",
                                     str(upload_limit), "--hls-bad-manifest-max-errors", "5",
                                     "--hls-bad-manifest-retry-interval", "2",
                                     *(["--hide-hls-segments"] if hidden else [])], work / "support.log"))  # fmt: skip
        await wait_http(f"http://{HOST}:{port}/app/stat", 30)
        apis = []
        for i in range(engines):
            ip = f"127.0.0.{ENGINE_BASE + i}"
            http_port = free_port()
            stack.enter_context(spawned([*py, "engine", "--http-port", str(http_port), "--port", str(free_port()),
                                         "--bind", ip, "--pid-file-dir", str(work), "--startup-timeout", "30",
                                         "--allow-local-transport-files"], work / f"engine{i}.log"))  # fmt: skip
            apis.append(f"http://{HOST}:{http_port}")
        await asyncio.gather(*(wait_http(f"{api}/app/stat", 30) for api in apis))
        origin_before = origin.bytes_by_client()
        requests_before = origin.requests_by_client()
        played = await asyncio.gather(*(play(f"{api}/ace/getstream?url={public}", duration) for api in apis))
        stats = await asyncio.gather(*(stat(api) for api in apis))
        origin_after = origin.bytes_by_client()
        requests = origin.requests_by_client()
    peers = sum(int(s.get("downloaded", 0)) for s in stats)
    from_origin = sum(int(s.get("downloaded_from_origin", 0)) for s in stats)
    egress = {ip: origin_after[ip] - origin_before.get(ip, 0) for ip in origin_after}
    to_engines = sum(v for ip, v in egress.items() if ip != HOST)
    return {
        "mode": "private" if hidden else "public",
        "engines": engines,
        "played_bytes": sum(played),
        "from_peers": peers,
        "from_origin": from_origin,
        "origin_share": round(from_origin / (peers + from_origin), 3) if peers + from_origin else None,
        "origin_egress_to_engines": to_engines,
        "origin_egress_to_support": egress.get(HOST, 0),
        "origin_rejected": sum(int(s.get("origin_rejected", 0)) for s in stats),
        # Requests the origin's access log names per client address during the run (the support node is 127.0.0.1).
        "origin_requests_by_client": {ip: n - requests_before.get(ip, 0) for ip, n in sorted(requests.items())},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="1,3,6", help="comma list of engine counts (default 1,3,6)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds each engine plays (default 20)")
    parser.add_argument("--support-upload-limit", type=int, default=30, metavar="KB_PER_S",
                        help="the HLS support node's --upload-limit; 0 = none (default 30, the stream is ~75)")
    parser.add_argument("--private", action="store_true",
                        help="a private broadcast (--hide-hls-manifest, --hide-hls-segments): engines must not "
                             "contact the origin at all")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    results = []
    for count in (int(c) for c in args.engines.split(",")):
        with tempfile.TemporaryDirectory(prefix="hls-offload-") as tmp:
            result = asyncio.run(one_run(count, args.duration, args.support_upload_limit, Path(tmp),
                                         hidden=args.private))  # fmt: skip
        results.append(result)
        print(json.dumps(result), flush=True)
    print("\n| engines | from peers (MB) | from origin (MB) | origin share | origin egress to engines (MB) | "
          "played (MB) = egress if they read HLS directly |\n|--:|--:|--:|--:|--:|--:|")  # fmt: skip
    for r in results:
        share = "n/a" if r["origin_share"] is None else f"{100 * r['origin_share']:.0f} %"
        print(f"| {r['engines']} | {r['from_peers'] / 1e6:.2f} | {r['from_origin'] / 1e6:.2f} | {share} | "
              f"{r['origin_egress_to_engines'] / 1e6:.2f} | {r['played_bytes'] / 1e6:.2f} |")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
