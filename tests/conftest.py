"""Shared fixtures."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from tests.opentracker import OpenTracker, find_opentracker, opentracker
from tests.pg import PostgresServer, find_pg_bin, postgres_server

OpenTrackerFactory = Callable[[Iterable[bytes]], OpenTracker]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI=true a skipped test is a failed one: .ci/run installs every tool the tests use, so a skip there
    means a broken setup (or a test hiding a missing feature), never something to pass over."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true (a skip in CI is a broken setup): {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """The same for a whole module skipped at import (a missing browser, say)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") == "true" and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true (a skip in CI is a broken setup): {report.longrepr}"


@pytest.fixture
def opentracker_factory() -> Iterator[OpenTrackerFactory]:
    """Start real opentrackers (whitelisting the given info_hashes); all are stopped at teardown, pass or fail.

    Skips when opentracker is not installed, except under CI=true where a missing tracker is a broken setup.
    """
    if find_opentracker() is None:
        message = "opentracker is not installed (apt-get install opentracker)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with contextlib.ExitStack() as stack:

        def start(info_hashes: Iterable[bytes] = ()) -> OpenTracker:
            return stack.enter_context(opentracker(info_hashes))

        yield start


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (tests/pg.py), stopped at its end, pass or fail. Skips when
    the postgresql package is not installed, except under CI=true."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        message = "PostgreSQL is not installed (apt-get install postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with postgres_server(bin_dir) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The registry's database URL, once a SQLite file and once a fresh database on the real PostgreSQL server:
    every registry test that takes it runs on both."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.sqlite3'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name, url = server.create_database()
    try:
        yield url
    finally:
        server.drop_database(name)
