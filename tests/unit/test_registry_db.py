"""The registry's schema on SQLite and a real PostgreSQL: revisions match the tables in models.py; a newer
database is refused and left alone; the SQLite file is private."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from swarmcast.registry.db import Database, DatabaseError, code_heads, engine_url, redact_url, sqlite_url
from swarmcast.registry.models import metadata, nodes
from tests.procs import free_port


def test_revisions_create_exactly_the_tables_of_models(registry_db_url: str) -> None:
    database = Database(registry_db_url)
    assert database.upgrade() in code_heads()
    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    database.dispose()
    assert differences == []


def test_upgrade_twice_is_a_no_op(registry_db_url: str) -> None:
    first = Database(registry_db_url)
    revision = first.upgrade()
    second = Database(registry_db_url)
    assert second.upgrade() == revision
    first.dispose()
    second.dispose()


def test_a_database_newer_than_the_code_is_refused_and_left_alone(registry_db_url: str) -> None:
    database = Database(registry_db_url)
    database.upgrade()
    with database.engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    newer = Database(registry_db_url)
    with pytest.raises(DatabaseError, match="revision 9999, newer than this swarmcast"):
        newer.upgrade()
    newer.dispose()
    with database.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "9999"
        assert connection.execute(sa.select(sa.func.count()).select_from(nodes)).scalar() == 0
    database.dispose()


def test_the_sqlite_file_and_its_journals_are_private(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    path.write_bytes(b"")
    path.chmod(0o644)  # a file left readable by everyone is made private too
    database = Database(sqlite_url(path))
    database.upgrade()
    with database.engine.connect() as connection:  # an open connection keeps the -wal and -shm files
        connection.execute(sa.text("SELECT 1"))
        files = [p for p in tmp_path.iterdir() if p.name.startswith("r.sqlite3")]
        assert {p.name for p in files} >= {"r.sqlite3", "r.sqlite3-wal", "r.sqlite3-shm"}
        for file in files:
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    database.dispose()
    fresh = tmp_path / "new.sqlite3"
    Database(sqlite_url(fresh)).dispose()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


def test_postgresql_urls_use_psycopg_and_passwords_are_hidden() -> None:
    assert engine_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert engine_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert engine_url("sqlite:///x") == "sqlite:///x"
    assert "secret" not in redact_url("postgresql+psycopg://u:secret@h/db")


def test_an_unknown_database_scheme_is_a_one_line_error() -> None:
    with pytest.raises(DatabaseError, match="--db nosuch://"):
        Database("nosuch://x")


def test_an_unreachable_postgresql_is_a_one_line_error() -> None:
    database = Database(f"postgresql://nobody@127.0.0.1:{free_port()}/none?connect_timeout=5")
    with pytest.raises(DatabaseError) as caught:
        database.upgrade()
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("--db postgresql+psycopg://nobody@127.0.0.1:")
