"""streaming-utils' command lines, verbatim, against the ``acestreamengine`` console script; and clean failures.

The console script is made here the way pip makes it (a file named ``acestreamengine`` whose ``#!`` line is this
interpreter and which calls ``swarmcast.commands.acestream:main``), so the process name the kernel gives it and
the pid file name are the installed script's.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarmcast.transport import Descriptor, public_key_bytes
from tests.integration.chain import HOST, decode_video, engine, read_stream, signal_source, wait_until
from tests.procs import free_port, swarmcast_process
from tests.streaming_utils import source_line, support_line

TOKEN = "n0detoken"
LAUNCHER = """#!{python}
import sys
from swarmcast.commands.acestream import main
sys.exit(main())
"""


def console_script(directory: Path, name: str) -> Path:
    path = directory / name
    path.write_text(LAUNCHER.format(python=sys.executable))
    path.chmod(0o755)
    return path


def env_with_source_path() -> dict[str, str]:
    """The scripts import swarmcast from wherever this test does (a worktree's src/ rather than an install)."""
    import swarmcast

    env = dict(os.environ)
    src = str(Path(swarmcast.__file__).parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


def pid_files(directory: Path) -> dict[str, int]:
    return {p.name: int(p.read_text()) for p in directory.glob("*.pid")}


async def test_streaming_utils_source_and_support_lines_verbatim(tmp_path: Path) -> None:
    bin_dir, pid_dir, logs = tmp_path / "bin", tmp_path / "pid", tmp_path / "log"
    for d in (bin_dir, pid_dir, logs):
        d.mkdir()
    script = console_script(bin_dir, "acestreamengine")
    env = env_with_source_path()
    source_port, support_port = free_port(), free_port()
    with contextlib.ExitStack() as stack:
        signal_url = stack.enter_context(signal_source(tmp_path, bitrate="600k"))
        line = source_line(
            log=str(logs / f"source_node_{source_port}.log"), port=source_port, source=signal_url, bitrate=75000,
            name="stream-uid-1", title="Test channel", public=str(tmp_path / "public"),
            metadata=str(tmp_path / "metadata"), cache=str(tmp_path / f"cache/source_node_{source_port}_cache"),
            state=str(tmp_path / f"state/source_node_{source_port}_state"), pid=str(pid_dir),
            trackers=[f"http://{HOST}:{free_port()}/announce"], categories=["sport", "entertaining"],
            provider_key="provider-key-1", sid="sid-1", token=TOKEN, upload_to=[f"{HOST}:{support_port}"],
            private_node=0,
        )  # fmt: skip
        source = stack.enter_context(swarmcast_process(
            line, command=[str(script)], env=env,
            stderr_path=tmp_path / "source.stderr", wait_port=(HOST, source_port),
        ))  # fmt: skip
        support = stack.enter_context(swarmcast_process(
            support_line(log=str(logs / f"support_node_{support_port}.log"), port=support_port,
                         download_from=f"{HOST}:{source_port}", cache=str(tmp_path / "cache/support"),
                         state=str(tmp_path / "state/support"), pid=str(pid_dir), token=TOKEN, debug=True),
            command=[str(script)], env=env, stderr_path=tmp_path / "support.stderr", wait_port=(HOST, support_port),
        ))  # fmt: skip

        # Exactly one pid file per node, streaming-utils' name, holding a pid psutil calls "acestreamengine".
        expected = {f"acestreamengine-{source_port}.pid": source.pid,
                    f"acestreamengine-{support_port}.pid": support.pid}  # fmt: skip
        # Written right after the port opens: wait for the second, then compare the whole directory.
        await wait_until(lambda: len(pid_files(pid_dir)) >= len(expected), 10.0)
        assert pid_files(pid_dir) == expected
        for pid in expected.values():
            assert Path(f"/proc/{pid}/comm").read_text().strip() == "acestreamengine"
            assert psutil.Process(pid).name() == "acestreamengine"

        api = stack.enter_context(engine(tmp_path))
        transport = f"http://{HOST}:{support_port}/app/{TOKEN}/get_transport_file?format=raw"
        data = await read_stream(f"{api}/ace/getstream?url={urllib.parse.quote(transport, safe='')}", 4.0)
        frames = decode_video(data)
        assert len(frames) >= 25, f"{len(frames)} frames decoded from {len(data)} bytes"

        # The flags did what they say: rotation-ready log files, debug logging from the --debug-* run.
        support_log = (logs / f"support_node_{support_port}.log").read_text()
        assert "debug logging on for --debug-multicast-pex" in support_log
        assert (tmp_path / "public" / "stream-uid-1.acelive").is_file()

        # SIGTERM (what stop_nodes.py sends): each node exits 0 and its pid file goes with it.
        assert support.stop() == 0
        assert pid_files(pid_dir) == {f"acestreamengine-{source_port}.pid": source.pid}
        assert source.stop() == 0
        assert pid_files(pid_dir) == {}


def test_start_engine_is_the_same_program(tmp_path: Path) -> None:
    """``start-engine`` prints the same version, and its node calls itself acestreamengine with the same pid file."""
    script = console_script(tmp_path, "start-engine")
    env = env_with_source_path()
    out = subprocess.run([str(script), "--version"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0
    assert out.stdout.startswith("version: ") and " revision: " in out.stdout
    key = Ed25519PrivateKey.generate()
    descriptor = Descriptor(name="t", title="T", piece_size=188 * 64, bitrate=10_000, public_key=public_key_bytes(key))
    transport = tmp_path / "t.acelive"
    transport.write_bytes(descriptor.encode())
    port = free_port()
    args = ["--stream-support-node", "--port", str(port), "--bind", HOST, "--pid-file-dir", str(tmp_path),
            "--url", str(transport)]  # fmt: skip
    with swarmcast_process(args, command=[str(script)], env=env, stderr_path=tmp_path / "support.stderr",
                           wait_port=(HOST, port)) as node:  # fmt: skip
        assert psutil.Process(node.pid).name() == "acestreamengine"
        deadline = time.monotonic() + 10
        while not pid_files(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pid_files(tmp_path) == {f"acestreamengine-{port}.pid": node.pid}
        assert node.stop() == 0
    assert pid_files(tmp_path) == {}


def run_node(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "swarmcast", *args], cwd=cwd, env=env_with_source_path(),
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def assert_clean_failure(result: subprocess.CompletedProcess[str], flag: str, value: str, tmp: Path) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert flag in lines[0] and value in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    left = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file() and p.name != "afile")
    assert left == [], f"left behind: {left}"


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        sock.listen()
        port: int = sock.getsockname()[1]
        yield port


def source_args(tmp: Path, *extra: str, port: int = 0) -> list[str]:
    return ["node", "source", "--bind", HOST, "--port", str(port), "--source", f"http://{HOST}:1/none.ts",
            "--title", "T", "--name", "t", "--publish-dir", str(tmp / "pub"), "--metadata-dir", str(tmp / "meta"),
            "--pid-file-dir", str(tmp / "pid"), "--log-file", str(tmp / "node.log"), *extra]  # fmt: skip


def test_port_in_use_is_one_line_and_leaves_nothing(tmp_path: Path, busy_port: int) -> None:
    result = run_node(source_args(tmp_path, port=busy_port), tmp_path)
    assert_clean_failure(result, "--port", str(busy_port), tmp_path)
    assert "in use" in result.stderr
    assert not (tmp_path / "meta").exists() and not (tmp_path / "pub").exists()


@pytest.mark.parametrize("flag", ["--publish-dir", "--metadata-dir", "--cache-dir", "--state-dir", "--pid-file-dir"])
def test_unusable_directory_is_one_line_and_leaves_nothing(tmp_path: Path, flag: str) -> None:
    # Tests run as root here, so permission bits prove nothing: a directory under a regular file cannot exist.
    (tmp_path / "afile").write_text("")
    bad = str(tmp_path / "afile" / "dir")
    result = run_node([*source_args(tmp_path), flag, bad], tmp_path)
    assert_clean_failure(result, flag, bad, tmp_path)


def test_read_only_directory_is_refused(tmp_path: Path) -> None:
    """/proc refuses new files even to root: the write probe finds what permission bits would not."""
    result = run_node([*source_args(tmp_path), "--pid-file-dir", "/proc"], tmp_path)
    assert_clean_failure(result, "--pid-file-dir", "/proc", tmp_path)


@pytest.mark.parametrize(("flag", "value"), [("--bitrate", "fast"), ("--piecesize", "100"), ("--category", "news"),
                                             ("--log-modules", "root"), ("--private-node", "2")])  # fmt: skip
def test_bad_value_is_one_line_and_leaves_nothing(tmp_path: Path, flag: str, value: str) -> None:
    result = run_node([*source_args(tmp_path), flag, value], tmp_path)
    assert_clean_failure(result, flag, value, tmp_path)


def test_unknown_option_names_it(tmp_path: Path) -> None:
    script = console_script(tmp_path, "acestreamengine")
    result = subprocess.run([str(script), "--stream-source-node", "--no-such-option", "1"], env=env_with_source_path(),
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--no-such-option" in result.stderr, result.stderr


@pytest.mark.parametrize("flag", ["--http-port", "--port"])
def test_engine_port_in_use_is_one_line(tmp_path: Path, busy_port: int, flag: str) -> None:
    ports = {"--http-port": str(free_port()), "--port": str(free_port()), flag: str(busy_port)}
    result = run_node(["engine", "--http-bind", HOST, "--bind", HOST, "--pid-file-dir", str(tmp_path / "pid"),
                       *(w for item in ports.items() for w in item)], tmp_path)  # fmt: skip
    assert_clean_failure(result, flag, str(busy_port), tmp_path)


def test_unreadable_key_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    """A key the node cannot read must not be replaced by a new one (that would be another broadcast)."""
    (tmp_path / "meta" / "t.sauth").mkdir(parents=True)
    result = run_node(source_args(tmp_path), tmp_path)
    assert_clean_failure(result, "--metadata-dir", "t.sauth", tmp_path)
    assert sorted(p.name for p in (tmp_path / "meta").iterdir()) == ["t.sauth"]


def test_missing_local_transport_file_is_one_line(tmp_path: Path) -> None:
    missing = str(tmp_path / "none.acelive")
    result = run_node(["node", "support", "--port", "0", "--url", missing, "--pid-file-dir", str(tmp_path)], tmp_path)
    assert_clean_failure(result, "--url", missing, tmp_path)
