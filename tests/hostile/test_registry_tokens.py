"""The registry's two tokens against hostile clients, with a real ``swarmcast registry`` on loopback: a node's
token registers and beats but reads no key and no list; tokens of bytes that are not UTF-8 (in
``Authorization: Bearer``, ``X-Token`` or ``?token=``) are a 401, never a 500 with a traceback; the admin and the
node token cannot be the same; the generated tokens are files named in the log, never the tokens; a key file
inside --state-dir is warned about."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.integration.test_registry_fleet import HOST, TOKEN, admin
from tests.procs import free_port, swarmcast_process
from tests.registry_helpers import node_body

NODE_TOKEN = "registry-node-token-9876"
KEY = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIHostileTestKeyBytesHostile\n-----END PRIVATE KEY-----\n"


@contextlib.contextmanager
def registry(tmp: Path, port: int, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    with swarmcast_process(["registry", "--port", str(port), "--bind", HOST, "--state-dir", str(tmp / "registry"),
                            *args], env=env, stderr_path=tmp / "registry.log", wait_port=(HOST, port),
                           start_timeout=90):  # fmt: skip
        yield f"http://{HOST}:{port}"


def raw(port: int, head: bytes, body: bytes = b"") -> bytes:
    """One request as bytes (headers a client library would refuse), the whole answer."""
    with socket.create_connection((HOST, port), timeout=30) as sock:
        sock.sendall(head + b"\r\n" + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_the_node_token_registers_but_reads_no_key_and_odd_bytes_are_a_401(tmp_path: Path) -> None:
    port = free_port()
    with registry(tmp_path, port, "--token", TOKEN, "--node-token", NODE_TOKEN) as base:
        assert admin("POST", f"{base}/controller/metadata", {"ch1": {"last_seq": 1, "private_key": KEY}}).status == 200
        registered = admin("POST", f"{base}/api/nodes", node_body("source", "127.0.0.1:7000"), token=NODE_TOKEN)
        assert registered.status == 201, registered
        node_id = json.loads(registered.body)["node_id"]
        beat = admin("POST", f"{base}/api/nodes/{node_id}/heartbeat", {"content_ids": [], "figures": {}},
                     token=NODE_TOKEN)  # fmt: skip
        assert beat.status == 200, beat
        for read in ("/api/controller/keys/ch1", "/api/controller/keys", "/controller/source_node?get_metadata",
                     "/api/controller/lists"):  # fmt: skip
            refused = admin("GET", base + read, token=NODE_TOKEN)
            assert refused.status in (401, 403) and b"PRIVATE KEY" not in refused.body, (read, refused)
        assert b"PRIVATE KEY" in admin("GET", f"{base}/api/controller/keys/ch1").body  # the admin token does
        # Bytes that are not UTF-8 where a token goes: a plain 401 each time.
        node = json.dumps(node_body()).encode()
        for method, path, body in ((b"GET", b"/api/controller/keys/ch1", b""),
                                   (b"GET", b"/controller/source_node?get_metadata", b""),
                                   (b"POST", b"/controller/monitor", b"{}"), (b"POST", b"/api/nodes", node)):
            for header in (b"X-Token: \xff\xfe", b"Authorization: Bearer \xff\xfe", b"Authorization: \xff\xfe",
                           b"X-Token: " + TOKEN.encode() + b"\xff"):  # fmt: skip
                answer = raw(port, method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n"
                             b"Content-Type: application/json", body)  # fmt: skip
                assert answer.startswith((b"HTTP/1.1 401", b"HTTP/1.1 403")), (path, header, answer[:300])
                assert b"PRIVATE KEY" not in answer
            answer = raw(port, method + b" " + path + (b"&" if b"?" in path else b"?") + b"token=%FF%FE HTTP/1.1\r\n"
                         b"Host: x\r\nContent-Type: application/json", body)  # fmt: skip
            assert answer.startswith((b"HTTP/1.1 401", b"HTTP/1.1 403")), (path, answer[:300])
    log = (tmp_path / "registry.log").read_text(errors="replace")
    assert "Traceback" not in log and "UnicodeEncodeError" not in log and "Error handling request" not in log, log
    assert TOKEN not in log and NODE_TOKEN not in log


def test_equal_tokens_are_refused_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMCAST_REGISTRY")}
    same = {"SWARMCAST_REGISTRY_TOKEN": "same-token", "SWARMCAST_REGISTRY_NODE_TOKEN": "same-token"}
    for args, extra in ((["--token", "same-token", "--node-token", "same-token"], {}), ([], same)):
        command = [sys.executable, "-m", "swarmcast.cli", "registry", "--port", str(free_port()), "--bind", HOST,
                   "--state-dir", str(tmp_path / "r"), *args]  # fmt: skip
        result = subprocess.run(command, env={**env, **extra}, capture_output=True, text=True, timeout=120,
                                check=False)  # fmt: skip
        assert result.returncode == 2, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "--node-token" in lines[0] and "same-token" not in lines[0], result.stderr


def test_generated_tokens_are_files_and_a_key_file_in_the_state_dir_is_warned_about(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMCAST_REGISTRY")}
    state = tmp_path / "registry"
    with registry(tmp_path, free_port(), env=env) as base:
        admin_token = (state / "registry.token").read_text().strip()
        node_token = (state / "registry-node.token").read_text().strip()
        assert admin_token and node_token and admin_token != node_token
        for name in ("registry.token", "registry-node.token"):
            assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
        assert admin("POST", f"{base}/api/nodes", node_body(), token=node_token).status == 201
        assert admin("GET", f"{base}/api/controller/keys", token=node_token).status == 401
        assert admin("GET", f"{base}/api/controller/keys", token=admin_token).status == 200
    log = (tmp_path / "registry.log").read_text()
    assert str(state / "registry-node.token") in log and str(state / "registry.token") in log
    assert admin_token not in log and node_token not in log
    assert "is inside --state-dir" in log and "--key-file" in log
    # The key file elsewhere: no warning.
    with registry(tmp_path / "second", free_port(), "--key-file", str(tmp_path / "keys" / "registry.key"), env=env):
        pass
    assert "is inside --state-dir" not in (tmp_path / "second" / "registry.log").read_text()
