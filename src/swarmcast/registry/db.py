"""The registry's database: one SQLAlchemy engine (SQLite or PostgreSQL), its schema brought up to date by Alembic.

The same code and revisions serve both databases. SQLAlchemy's synchronous engine is used from the event loop
through ``Database.run`` (a worker thread): the registry's load is a few writes a second per hundred nodes, and
the synchronous drivers (the stdlib's sqlite3, psycopg 3) are the ones Alembic and SQLAlchemy test best.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

T = TypeVar("T")

MIGRATIONS = Path(__file__).with_name("migrations")
log = logging.getLogger("swarmcast.registry")
# Alembic tells every step at INFO ("Context impl SQLiteImpl."); the registry says in one line what it did.
logging.getLogger("alembic").setLevel(logging.WARNING)


class DatabaseError(Exception):
    """The database cannot be used: unreachable, or its schema is not one this code knows. One line."""


def engine_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3 (the driver we install); other URLs pass unchanged."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def code_heads() -> set[str]:
    """The newest schema revision(s) this code knows."""
    return set(ScriptDirectory.from_config(_alembic_config()).get_heads())


def database_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


READ_OPTION = "swarmcast_read"  # execution option marking a read-only transaction (plain BEGIN on SQLite)


class Database:
    """One engine; ``upgrade()`` once at start, then ``run(fn)`` for every write (``fn`` gets a connection in a
    transaction that commits when ``fn`` returns) and ``read(fn)`` for every read.

    On SQLite, ``run`` begins IMMEDIATE (it takes the write lock first, so its reads and writes are one serial
    transaction) while ``read`` begins DEFERRED: under WAL a reader sees one snapshot and never waits for the
    writer, so no number of readers (the public GET routes, the dashboard's series) can starve the heartbeats
    behind the write lock."""

    def __init__(self, url: str) -> None:
        self.url = engine_url(url)
        try:
            self.engine: Engine = sa.create_engine(self.url, pool_pre_ping=True)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as error:
            raise DatabaseError(f"--db {redact_url(url)}: {error}") from error
        if self.engine.dialect.name == "sqlite":
            # Readers and the heartbeat writer at once: WAL lets them; the busy timeout rides out a write lock.
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            # The stdlib driver begins a transaction only at the first write, so a query's reads before it
            # would see a state another thread changes before the write: BEGIN IMMEDIATE makes every
            # ``run(fn)`` one serial transaction (writers queue on the busy timeout; the load is small).
            sa.event.listen(self.engine, "begin", _sqlite_begin)
            database = self.engine.url.database
            if database and database != ":memory:" and not database.startswith("file:"):
                _private_file(Path(database))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def upgrade(self) -> str:
        """Bring the schema to this code's head; refuse a database written by a newer swarmcast. Returns the
        revision now stored."""
        script = ScriptDirectory.from_config(_alembic_config())
        heads = set(script.get_heads())
        try:
            with self.engine.begin() as connection:
                current = database_revision(connection)
                if current is not None and current not in {rev.revision for rev in script.walk_revisions()}:
                    raise DatabaseError(
                        f"the database {redact_url(self.url)} has schema revision {current}, newer than this "
                        f"swarmcast knows (up to {', '.join(sorted(heads))}): upgrade swarmcast or use another --db")
                if current not in heads:
                    config = _alembic_config()
                    config.attributes["connection"] = connection
                    command.upgrade(config, "head")
                    log.info("database schema upgraded from revision %s to %s", current or "(empty)",
                             database_revision(connection))
                return database_revision(connection) or ""
        except sa.exc.OperationalError as error:
            raise DatabaseError(f"--db {redact_url(self.url)}: {first_line(error)}") from error

    async def run(self, fn: Callable[[Connection], T]) -> T:
        def in_thread() -> T:
            with self.engine.begin() as connection:
                return fn(connection)

        return await asyncio.to_thread(in_thread)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """``fn`` in a read transaction (rolled back at the end): it must not write."""
        return await asyncio.to_thread(self.read_sync, fn)

    def read_sync(self, fn: Callable[[Connection], T]) -> T:
        with self.engine.connect().execution_options(**{READ_OPTION: True}) as connection, connection.begin() as tx:
            try:
                return fn(connection)
            finally:
                tx.rollback()

    def dispose(self) -> None:
        self.engine.dispose()


def _private_file(path: Path) -> None:
    """The SQLite file exists and is 0600 before SQLite opens it: it holds the fleet's keys (encrypted) and every
    node's address. SQLite gives its -wal and -shm files the database file's mode."""
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.fchmod(descriptor, 0o600)
        finally:
            os.close(descriptor)
    except OSError as error:
        raise DatabaseError(f"--db {path}: {error.strerror or error}") from error


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    dbapi_connection.isolation_level = None  # type: ignore[attr-defined]  # we say BEGIN ourselves (_sqlite_begin)
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    read = connection.get_execution_options().get(READ_OPTION, False)
    connection.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")


def redact_url(url: str) -> str:
    """The URL without its password (``postgresql://user:secret@host/db`` → ``postgresql://user:***@host/db``)."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url.rsplit("@", maxsplit=1)[-1]


def first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
