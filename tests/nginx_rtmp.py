"""A real nginx-rtmp on loopback for tests: an RTMP server to publish to and pull from (and its HLS, if wanted).

The configuration is the benchmark's (bench/baseline_nginx.py: our own prefix, one process, no daemon). Skips when
nginx or its RTMP module is missing, except under CI=true, where that is a broken setup and fails.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from bench.baseline_nginx import APP, NginxMissingError, require_nginx, write_nginx_conf

from tests.procs import free_port, wait_for_port

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Nginx:
    rtmp_port: int
    http_port: int
    workdir: Path

    def rtmp_url(self, name: str) -> str:
        return f"rtmp://{HOST}:{self.rtmp_port}/{APP}/{name}"


@contextlib.contextmanager
def nginx_rtmp(workdir: Path) -> Iterator[Nginx]:
    try:
        binary, module = require_nginx()
    except NginxMissingError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{error} (CI=true)")
        pytest.skip(str(error))
    workdir.mkdir(parents=True, exist_ok=True)
    rtmp_port, http_port = free_port(), free_port()
    conf = write_nginx_conf(workdir, rtmp_port, http_port, module=module)
    with (workdir / "nginx.log").open("wb") as log:
        process = subprocess.Popen([binary, "-c", str(conf), "-p", f"{workdir.resolve()}/"], stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=log, start_new_session=True)  # fmt: skip
    try:
        wait_for_port(HOST, rtmp_port, timeout=15.0)
        yield Nginx(rtmp_port, http_port, workdir)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
