"""A viewer engine imports only what a viewer needs (issue 12, engine cost: every module is resident memory).

The command line builds the parser of the named subcommand only (cli.commands_for), so ``swarmcast engine`` and
``acestreamengine --client-console`` never load PyAV, the RTMP server, the broadcaster, the fleet tool or the source
node. Checked in a fresh interpreter: this test process has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from swarmcast import cli

SRC = str(Path(__file__).resolve().parents[2] / "src")

# Top-level packages and our own modules a viewer engine has no use for. The registry's client side (client,
# bootstrap, reports: aiohttp only) is the engine's own (--registry, --bootstrap); its server side is not, nor
# prometheus-client until someone scrapes /metrics, nor rich (swarmcast ctl's tables).
NOT_FOR_A_VIEWER = (
    "av", "pyrtmp", "bitstring", "numpy", "matplotlib", "maxminddb", "psutil", "sqlalchemy", "alembic", "psycopg",
    "prometheus_client", "rich", "swarmcast.broadcaster", "swarmcast.fleet", "swarmcast.registry.db",
    "swarmcast.registry.app", "swarmcast.registry.api", "swarmcast.registry.queries", "swarmcast.registry.web",
    "swarmcast.registry.controller", "swarmcast.registry.keys", "swarmcast.node.source",
    "swarmcast.node.support", "swarmcast.node.standby", "swarmcast.node.hls_signer", "swarmcast.ingest.rtmp_pull",
    "swarmcast.media.testsignal", "swarmcast.media.tsmux", "swarmcast.commands.node", "swarmcast.commands.fleet",
    "swarmcast.commands.broadcaster", "swarmcast.commands.testsrc", "cryptography.hazmat.primitives.serialization",
)  # fmt: skip

# Builds the parser as the command line does, imports the modules run_engine starts the engine with, and prints
# what is loaded. ``--help`` exits after argparse printed it, as any parse would have imported the command by then.
PROBE = """
import contextlib, io, json, sys
{call}
import swarmcast.node.engine, swarmcast.http.engine_api, swarmcast.node.lifecycle
print(json.dumps(sorted(sys.modules)))
"""
SWARMCAST = """
from swarmcast import cli
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    cli.main(["engine", "--help"])
"""
ACESTREAM = """
from swarmcast.commands import acestream
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    acestream.main(["--client-console", "--help"])
"""


def loaded_modules(call: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(call=call)], capture_output=True, text=True,
                         env={"PYTHONPATH": SRC}, check=True, timeout=60)  # fmt: skip
    return list(json.loads(out.stdout.splitlines()[-1]))


def unwanted(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == bad or m.startswith(bad + ".") for bad in NOT_FOR_A_VIEWER)]


@pytest.mark.parametrize("call", [SWARMCAST, ACESTREAM], ids=["swarmcast-engine", "acestreamengine"])
def test_a_viewer_engine_loads_no_broadcaster_code(call: str) -> None:
    modules = loaded_modules(call)
    assert "swarmcast.commands.engine" in modules  # the probe did reach the engine's command
    assert unwanted(modules) == []


def test_only_the_named_subcommand_is_imported() -> None:
    assert cli.commands_for(["engine", "--port", "1"]) == ("engine",)
    assert cli.commands_for(["node", "source", "--source", "x"]) == ("node",)
    # No command, an unknown one, or only options: every parser (the list of commands, "invalid choice").
    assert cli.commands_for([]) == cli.COMMAND_MODULES
    assert cli.commands_for(["--help"]) == cli.COMMAND_MODULES
    assert cli.commands_for(["nonsense"]) == cli.COMMAND_MODULES
    assert cli.commands_for(["--", "engine"]) == cli.COMMAND_MODULES


def test_top_level_help_still_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    listed = capsys.readouterr().out
    assert all(name in listed for name in cli.COMMAND_MODULES)


def test_an_unknown_command_is_named_with_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["enigne"])
    assert exit_info.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "invalid choice: 'enigne'" in err and "engine" in err
