"""A real PostgreSQL server for the tests: Debian's postgresql package, ``initdb`` and ``pg_ctl`` in a temporary
directory, listening on a free loopback port (and a unix socket in that directory), trust authentication.

Run as root (CI containers), the server runs as the unprivileged ``postgres`` user that the package creates
(PostgreSQL refuses to run as root); the temporary directory is handed to that user. ``postgres_server()`` stops
the server (immediate shutdown) and removes the directory whatever happens; ``create_database`` gives each test
a database of its own on the one server of the session (tests/conftest.py: ``registry_db_url``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.procs import free_port

PG_LIB = Path("/usr/lib/postgresql")  # Debian: /usr/lib/postgresql/<major>/bin
SUPERUSER = "swarmcast"
RUN_AS = "postgres"  # when we are root: the package's system user
_START_TIMEOUT = 60  # seconds pg_ctl waits for the server to accept connections
_names = itertools.count(1)


def find_pg_bin() -> Path | None:
    """The newest installed server's bin directory (or $SWARMCAST_PG_BIN), None when there is none."""
    override = os.environ.get("SWARMCAST_PG_BIN")
    candidates = [Path(override)] if override else sorted(
        (p / "bin" for p in PG_LIB.glob("*") if p.name.isdigit()), key=lambda p: int(p.parent.name), reverse=True)
    for directory in candidates:
        if (directory / "pg_ctl").exists() and (directory / "initdb").exists():
            return directory
    return None


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    socket_dir: Path
    data_dir: Path
    log_file: Path

    def url(self, database: str = "postgres") -> str:
        """A URL as an operator writes it for ``--db`` (registry/db.py picks psycopg)."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host=self.host, port=self.port, user=SUPERUSER, dbname="postgres",
                             autocommit=True, connect_timeout=10) as connection:  # fmt: skip
            connection.execute(sql.encode())  # our own fixed names, never input

    def create_database(self) -> tuple[str, str]:
        """A fresh empty database: (its name, its URL)."""
        name = f"registry_test_{os.getpid()}_{next(_names)}"
        self._admin(f'CREATE DATABASE "{name}"')
        return name, self.url(name)

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log_tail(self, limit: int = 3000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-limit:]
        except OSError as error:
            return f"<no server log: {error}>"


def _demote() -> tuple[int, int] | None:
    """(uid, gid) to run the server as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(RUN_AS)  # KeyError: no postgres user, the package is not installed properly
    return entry.pw_uid, entry.pw_gid


def _run(command: list[str], ids: tuple[int, int] | None, timeout: float) -> None:
    kwargs: dict[str, object] = {}
    if ids is not None:
        kwargs = {"user": ids[0], "group": ids[1], "extra_groups": []}
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, cwd="/",
                          **kwargs)  # type: ignore[call-overload]  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:2])} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


@contextlib.contextmanager
def postgres_server(bin_dir: Path) -> Iterator[PostgresServer]:
    """Start a throwaway PostgreSQL server; it is stopped and its files removed when the context exits."""
    ids = _demote()
    root = Path(tempfile.mkdtemp(prefix="swarmcast-pg-"))
    try:
        if ids is not None:
            os.chown(root, *ids)
        data, sockets, log_file = root / "data", root / "sock", root / "server.log"
        sockets.mkdir()
        if ids is not None:
            os.chown(sockets, *ids)
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
              "--no-sync", "--no-instructions"], ids, timeout=120)  # fmt: skip
        port = free_port()
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off -c synchronous_commit=off "
                   f"-c full_page_writes=off -c max_connections=50")  # fmt: skip
        server = PostgresServer(host="127.0.0.1", port=port, socket_dir=sockets, data_dir=data, log_file=log_file)
        try:
            _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log_file), "-o", options, "-w",
                  "-t", str(_START_TIMEOUT), "start"], ids, timeout=_START_TIMEOUT + 30)  # fmt: skip
            yield server
        finally:
            # Immediate: no checkpoint to wait for, the files are thrown away next. Also after a failed start
            # (pg_ctl may have launched a server that never answered in time).
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop"],
                     ids, timeout=60)  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
