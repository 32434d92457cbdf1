"""Database connection: SQLite (WAL, busy timeout, foreign keys, BEGIN IMMEDIATE writes) or any DATABASE_URL.

Write transactions are serialised on both dialects, so a read-then-write inside `Store.write()` never loses an
update: SQLite takes its write lock up front (`BEGIN IMMEDIATE`); PostgreSQL takes a transaction-scoped
advisory lock (`pg_advisory_xact_lock`) as the transaction's first statement, with the same 30 s wait limit.
Migrations run under a lock too (PostgreSQL: an advisory lock of their own; SQLite: one exclusive transaction),
so several processes starting at once never race on the schema.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
BUSY_TIMEOUT_MS = 30_000


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        # A write transaction takes the write lock up front, so two processes never
        # deadlock upgrading read locks ("database is locked" mid-transaction).
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")


WRITE_LOCK = 0x7672_6674_0001
"""PostgreSQL advisory lock key every write transaction holds (per database): writes are serialised, as on SQLite."""
MIGRATION_LOCK = 0x7672_6674_0002
"""PostgreSQL advisory lock key held while migrating: concurrent starts upgrade one after the other."""


def _postgres_setup(engine: Engine) -> None:
    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        # READ COMMITTED reads each statement's latest committed data; holding this lock from the first
        # statement means every read in the transaction sees the previous writer's commit and no other writer
        # runs until this one ends. Without it, two read-modify-writes of one row lose an update.
        if conn.get_execution_options().get("write"):
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{BUSY_TIMEOUT_MS}ms'")
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        _sqlite_setup(engine)
        return engine
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "postgresql":
        _postgres_setup(engine)
    return engine


def _alembic_config():
    from alembic.config import Config
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    """The newest migration's revision id."""
    from alembic.script import ScriptDirectory
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest alembic revision (run at every start; a no-op when current).

    One transaction under a lock: on PostgreSQL an advisory lock of its own (waited for without a limit: the
    process holding it is migrating), on SQLite the write lock (`BEGIN IMMEDIATE`, exclusive of every other
    writer). A process that waited finds the schema at head and does nothing.
    """
    from alembic import command

    cfg = _alembic_config()
    postgres = engine.dialect.name == "postgresql"
    with engine.connect().execution_options(write=not postgres) as conn:
        if postgres:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        else:
            conn.begin()  # BEGIN IMMEDIATE (the write option): alembic runs inside it
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()


class Store:
    """The database of one data dir. `read()` for queries, `write()` for changes."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(self.engine.execution_options(write=True), expire_on_commit=False)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as s:
            yield s

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed on success, rolled back on any error."""
        with self._writer() as s, s.begin():
            yield s

    def close(self) -> None:
        self.engine.dispose()


def database_url(data_dir: Path) -> str:
    return os.environ.get("DATABASE_URL") or f"sqlite:///{Path(data_dir).resolve() / 'studio.db'}"


def open_store(data_dir: Path) -> Store:
    store = Store(database_url(data_dir))
    migrate(store.engine)
    return store
