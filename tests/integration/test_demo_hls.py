"""``swarmcast demo --hls`` end to end: it brings RTMP -> ladder -> swarm -> HLS up, prints the URLs (which answer
as printed), and Ctrl-C stops every process it started (the rendition nodes included) and removes its directory."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from swarmcast.channel import Channel


def _read_until(process: subprocess.Popen[bytes], output: Path, marker: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = output.read_text(errors="replace")
        if marker in text:
            return text
        assert time.monotonic() < deadline, f"no {marker!r} within {timeout} s:\n{text}"
        assert process.poll() is None, f"demo exited with {process.returncode}:\n{text}"
        time.sleep(0.2)


@pytest.mark.timeout(170)
def test_demo_hls_prints_working_urls_and_cleans_up(tmp_path: Path) -> None:
    output = tmp_path / "demo.out"
    with output.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "swarmcast.cli", "demo", "--hls"],
                                   stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        text = _read_until(process, output, "Ctrl-C stops everything.", 150.0)
        workdir = Path(re.search(r"swarmcast demo --hls in (\S+)", text).group(1))  # type: ignore[union-attr]
        master = re.search(r"master playlist of every rendition \(through the swarm\): (\S+)", text)
        assert master is not None, text
        with urllib.request.urlopen(master.group(1), timeout=30) as response:
            playlist = response.read().decode()
        assert playlist.count("#EXT-X-STREAM-INF:") == 2 and "RESOLUTION=256x144" in playlist
        channel_file = re.search(r"\(also (\S+\.acechannel)\)", text)
        assert channel_file is not None
        channel = Channel.decode(Path(channel_file.group(1)).read_bytes())
        assert [r.name for r in channel.renditions] == ["source", "P144p30fps16x9"]
        for url in re.findall(r"origin, \S+ \(\d+x\d+\):\s+(\S+)", text):
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.read().startswith(b"#EXTM3U")
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
        assert not workdir.exists()
        leftover = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, text=True, check=False)
        assert leftover.stdout == "", f"processes left behind: {leftover.stdout}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
