"""``fleet receiver`` over HTTP: the token guards everything, and nothing is stored without it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from swarmcast.fleet.controller import request
from tests.integration.test_fleet_nodes import env, fleet, write_root
from tests.integration.test_fleet_restore import TOKEN, receiver
from tests.procs import free_port

HOST = "127.0.0.1"


def test_token_is_required_and_bad_posts_store_nothing(tmp_path: Path) -> None:
    (tmp_path / "ctl").mkdir()
    (tmp_path / "ctl" / "source.json").write_text('[{"stream_uid": "a", "port": 1}, // a comment\n]')
    (tmp_path / "ctl" / "support.json").write_text('{"127.0.0.1": [{"port": 2}], "default": []}')
    port = free_port()
    body = json.dumps({"a": {"last_seq": 5, "private_key": "KEY"}}).encode()
    with receiver(tmp_path, port) as store:
        base = f"http://{HOST}:{port}"
        for url in (f"{base}/metadata", f"{base}/metadata?token=wrong-token"):
            answer = request("POST", url, body=body)
            assert answer.status == 403, answer
        assert list((store / "metadata").iterdir()) == []
        assert request("GET", f"{base}/source_node").status == 403
        answer = request("POST", f"{base}/metadata?token={TOKEN}", body=b"{not json")
        assert answer.status == 400
        assert request("POST", f"{base}/metadata?token={TOKEN}", body=body).status == 200
        listed = json.loads(request("GET", f"{base}/source_node?token={TOKEN}").body)
        assert listed == {"result": [{"stream_uid": "a", "port": 1}]}
        with_meta = json.loads(request("GET", f"{base}/source_node?token={TOKEN}&get_metadata").body)
        assert with_meta["result"][0]["metadata"] == {"last_seq": 5, "private_key": "KEY"}
        # The support list is picked by the requesting address.
        mine = json.loads(request("GET", f"{base}/support_node?token={TOKEN}").body)
        other = json.loads(request("GET", f"{base}/support_node?token={TOKEN}", source="127.0.0.9").body)
        assert mine == {"result": [{"port": 2}]} and other == {"result": []}
    assert "KEY" not in (tmp_path / "receiver.log").read_text()


def test_a_short_token_is_refused() -> None:
    result = subprocess.run([sys.executable, "-m", "swarmcast", "fleet", "receiver", "--port", "1",
                             "--dir", "/tmp/x", "--token", "short"],
                            capture_output=True, text=True, env=env(), timeout=60, check=False)  # fmt: skip
    assert result.returncode == 2 and "--token: at least 8 characters" in result.stderr


def test_a_controller_error_aborts_the_run_with_its_message(tmp_path: Path) -> None:
    """``{"error": "..."}`` from the controller (here: its source list is broken) stops the run, nothing started."""
    (tmp_path / "ctl").mkdir()
    (tmp_path / "ctl" / "source.json").write_text("[{")
    (tmp_path / "ctl" / "support.json").write_text("[]")
    port = free_port()
    config = write_root(tmp_path / "app", source_node=f"http://{HOST}:{port}/source_node?token={TOKEN}")
    with receiver(tmp_path, port):
        result = fleet(config, "start-sources")
        bad_token = write_root(tmp_path / "app2", source_node=f"http://{HOST}:{port}/source_node?token=nope")
        refused = fleet(bad_token, "start-sources")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "controller.source_node http://127.0.0.1:" in result.stderr and "token=***" in result.stderr
    assert "error: " in result.stderr and "source.json: line 1" in result.stderr
    assert "nothing was started or stopped" in result.stderr
    assert not (tmp_path / "app" / "tmp").exists()
    assert refused.returncode == 2 and "HTTP 403" in refused.stderr
