"""The registry's schema: revisions match the tables in models.py; a newer database is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from swarmcast.registry.db import Database, DatabaseError, code_heads, engine_url, redact_url, sqlite_url
from swarmcast.registry.models import metadata


def test_revisions_create_exactly_the_tables_of_models(tmp_path: Path) -> None:
    database = Database(sqlite_url(tmp_path / "r.sqlite3"))
    assert database.upgrade() in code_heads()
    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    database.dispose()
    assert differences == []


def test_upgrade_twice_is_a_no_op(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "r.sqlite3")
    first = Database(url).upgrade()
    assert Database(url).upgrade() == first


def test_a_database_newer_than_the_code_is_refused_and_left_alone(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "r.sqlite3")
    database = Database(url)
    database.upgrade()
    with database.engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(DatabaseError, match="revision 9999, newer than this swarmcast"):
        Database(url).upgrade()
    with database.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "9999"


def test_postgresql_urls_use_psycopg_and_passwords_are_hidden() -> None:
    assert engine_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert engine_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert engine_url("sqlite:///x") == "sqlite:///x"
    assert "secret" not in redact_url("postgresql+psycopg://u:secret@h/db")


def test_an_unknown_database_scheme_is_a_one_line_error() -> None:
    with pytest.raises(DatabaseError, match="--db nosuch://"):
        Database("nosuch://x")
