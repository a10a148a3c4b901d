"""Connection handling and migrations for the metadata store."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from outcrop.errors import ConfigError
from outcrop.store.datadir import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE
from outcrop.store.migrations import MIGRATIONS
from outcrop.store.schema import schema_migrations

# SQLite: wait this long for another process's write lock instead of failing at once.
SQLITE_BUSY_TIMEOUT_MS = 15_000
# Any fixed 64-bit number: the PostgreSQL advisory lock all Outcrop migrators agree on.
MIGRATION_LOCK_KEY = 0x0C7C0_0001


class Database:
    """An SQLAlchemy engine plus the migration runner. One per process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        try:
            self.engine = _make_engine(url)
        except Exception as exc:
            raise ConfigError(f"Cannot use database URL {_redact(url)!r}: {exc}") from None

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A transaction; on SQLite it takes the write lock up front (BEGIN IMMEDIATE)."""
        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
            else:
                with conn.begin():
                    yield conn

    def migrate(self) -> int:
        """Apply pending migrations; returns the schema version. Safe to call from several processes."""
        try:
            with self.begin() as conn:
                if not self.is_sqlite:
                    # Serialise concurrent migrators (several servers starting at once) on PostgreSQL;
                    # on SQLite, BEGIN IMMEDIATE already does.
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                conn.exec_driver_sql(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, description TEXT, "
                    "applied_at DOUBLE PRECISION)"
                )
                done = {row[0] for row in conn.execute(sa.select(schema_migrations.c.version))}
                for version, description, statements in MIGRATIONS:
                    if version in done:
                        continue
                    for statement in statements:
                        conn.exec_driver_sql(statement)
                    conn.execute(
                        schema_migrations.insert().values(
                            version=version, description=description, applied_at=time.time()
                        )
                    )
            return max(version for version, _, _ in MIGRATIONS)
        except OperationalError as exc:
            raise ConfigError(
                f"Cannot reach the metadata database {_redact(self.url)!r}: {exc.orig}. "
                "Check OUTCROP_DATABASE_URL and that the server is running."
            ) from None

    def dispose(self) -> None:
        self.engine.dispose()


def _make_engine(url: str) -> Engine:
    kwargs: dict[str, Any] = {"future": True}
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:" and not path.startswith("file:"):
            Path(path).parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
            # Created 0600 before SQLite opens it: its -wal and -shm files take the database's mode.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE))
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        engine = sa.create_engine(url, **kwargs)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Autocommit mode at the driver level; Database.begin() issues BEGIN IMMEDIATE itself.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            _switch_to_wal(cur)
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    kwargs["pool_pre_ping"] = True
    return sa.create_engine(url, **kwargs)


def _switch_to_wal(cur: Any) -> None:
    """``PRAGMA journal_mode=WAL``, retried: on a new database file, switching while another
    connection (another migrator starting at the same moment) holds a lock can answer "database
    is locked" at once, without waiting on the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _redact(url: str) -> str:
    """Hide a password in a URL before it goes into a message."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"
