"""``swarmcast ctl`` against real processes: an engine's sessions started, listed and stopped, upload settings
changed on an engine and a node (and seen in their /metrics and monitor), JSON and table output, one-line errors;
and the engine's control endpoints refusing what they must (cross-site, remote writes, bad values)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from swarmcast.cli import main
from tests.integration.chain import HOST, engine, signal_source, source_node
from tests.procs import free_port

TOKEN = "ctl-t0ken"


def ctl_process(*args: str) -> subprocess.CompletedProcess[str]:
    """``swarmcast ctl ARGS`` as its own process, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "swarmcast.cli", "ctl", *args], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


def ctl_here(*args: str) -> subprocess.CompletedProcess[str]:
    """The same command line run in this process (a new interpreter costs seconds on a loaded machine)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["ctl", *args])
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return subprocess.CompletedProcess(["ctl", *args], code, out.getvalue(), err.getvalue())


async def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(ctl_here, *args)


async def ctl_json(*args: str) -> Any:
    done = await ctl(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_ctl_sessions_start_stop_and_limits_on_an_engine_and_a_node(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        signal_url = stack.enter_context(signal_source(tmp_path))
        source = stack.enter_context(source_node(tmp_path, signal_url, "--bitrate", "125000",
                                                 "--service-access-token", TOKEN))  # fmt: skip
        engine_url = stack.enter_context(engine(tmp_path))
        node_url = f"http://{HOST}:{source.port}"
        transport_url = f"{node_url}/app/{TOKEN}/get_transport_file?format=raw"
        cid = source.descriptor().infohash

        # -- start a session, see it listed (JSON and table), stop it ----------------------------------------
        as_process = ctl_process("--url", engine_url, "start", transport_url, "--json")
        assert as_process.returncode == 0, as_process.stderr
        started = json.loads(as_process.stdout)
        session_id = started["playback_session_id"]
        assert started["infohash"] == cid
        assert started["playback_url"] == f"{engine_url}/ace/r/{cid}/{session_id}"
        async with aiohttp.ClientSession() as http, http.get(started["playback_url"]) as player:
            assert player.status == 200
            async with asyncio.timeout(30):
                assert await player.content.readexactly(188 * 10)  # it plays
            listed = await ctl_json("--url", engine_url, "sessions")
            (broadcast,) = listed["broadcasts"]
            assert (broadcast["infohash"], broadcast["state"], broadcast["players"]) == (cid, "playing", 1)
            assert broadcast["sessions"] == 1 and broadcast["peers_by_role"]["source"] == 1
            assert broadcast["title"] == "Test channel"
            assert [s["session_id"] for s in listed["sessions"]] == [session_id]
            table = ctl_process("sessions", "--url", engine_url)  # the target options may follow the command too
            assert table.returncode == 0, table.stderr
            assert cid in table.stdout and session_id in table.stdout and "playing" in table.stdout
            stopped = await ctl_json("--url", engine_url, "stop", session_id[:10])
            assert stopped == {"stopped": session_id, "infohash": cid}
            async with asyncio.timeout(30):
                while await player.content.read(65536):  # a stopped session's player ends
                    pass
        assert (await ctl_json("--url", engine_url, "sessions"))["sessions"] == []
        gone = await ctl("--url", engine_url, "stop", session_id)
        assert gone.returncode == 1 and gone.stderr.count("\n") == 1 and "no session" in gone.stderr, gone.stderr

        # -- the engine's limits: shown, changed, in force on the joined broadcast (its /metrics says so) -----
        assert await ctl_json("--url", engine_url, "limits") == {"upload_slots": 16, "upload_limit": 0, "max_peers": 60}
        changed = await ctl_json("--url", engine_url, "limits", "--upload-slots", "3", "--upload-limit", "250")
        assert changed == {"upload_slots": 3, "upload_limit": 250, "max_peers": 60}
        async with aiohttp.ClientSession() as http, http.get(f"{engine_url}/metrics") as response:
            metrics = await response.text()
        assert f'swarmcast_upload_slots{{content_id="{cid}"}} 3.0' in metrics
        assert f'swarmcast_upload_limit_bytes_per_second{{content_id="{cid}"}} 250000.0' in metrics

        # -- the node: monitor and limits with its token; without it, a one-line refusal ---------------------
        figures = await ctl_json("--url", node_url, "--token", TOKEN, "monitor")
        assert (figures["type"], figures["infohash"]) == ("source", cid)
        changed = await ctl_json("--url", node_url, "--token", TOKEN, "limits", "--upload-slots", "5",
                                 "--max-peers", "9", "--upload-limit", "100")  # fmt: skip
        assert changed == {"upload_slots": 5, "upload_limit": 100, "max_peers": 9}
        again = await ctl_json("--url", node_url, "--token", TOKEN, "monitor")
        assert (again["max_upload_slots"], again["max_peers"], again["upload_limit"]) == (5, 9, 100)
        table = await ctl("--url", node_url, "--token", TOKEN, "monitor")
        assert table.returncode == 0 and "source node on port" in table.stdout and cid in table.stdout, table
        refused = ctl_process("--url", node_url, "monitor")
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
        assert "invalid access token" in refused.stderr
        on_node = await ctl("--url", node_url, "--token", TOKEN, "sessions")
        assert on_node.returncode == 1 and "is a node, not an engine" in on_node.stderr, on_node.stderr


async def test_ctl_usage_errors_are_one_line_and_exit_2() -> None:
    for args in (["limits", "--upload-slots", "x"], ["limits", "--upload-slots", "10001"], ["--url", "ftp://h:1",
                 "sessions"], ["--url", "http://127.0.0.1:6878/app", "sessions"], ["sessions", "--bogus"],
                 ["bogus"], [], ["stop"], ["limits", "--max-peers", "0"]):  # fmt: skip
        done = await ctl(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and "error:" in done.stderr, (args, done.stderr)
    # A port nothing listens on (port 1 is not that on a shared machine: a root test can bind it).
    unreachable = await ctl("--url", f"http://127.0.0.1:{free_port()}", "sessions")
    assert unreachable.returncode == 1 and "connection refused" in unreachable.stderr, unreachable.stderr
