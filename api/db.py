"""Connecting to the review database and bringing its schema up to date.

``make_engine`` works for SQLite (the local default) and PostgreSQL alike; ``upgrade``
runs the Alembic migrations shipped inside the package, so neither an ``alembic.ini`` nor a
particular working directory is needed at run time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

log = structlog.get_logger("fraudstream.api")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# How long a SQLite writer waits for another's lock before giving up, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 30_000
# PostgreSQL advisory lock taken while migrating (any constant unique to this service).
LOCK_KEY = 0x66726175647374  # "fraudst"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Per-connection SQLite settings: WAL (readers never block the writer), enforced
    foreign keys, and waiting for a lock instead of failing at once."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; for a SQLite file, its folder is created if missing."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        return create_engine(parsed, **kwargs)
    connect_args = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault("check_same_thread", False)
    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    else:
        # An in-memory database lives in one connection: share it across threads.
        kwargs.setdefault("poolclass", StaticPool)
    engine = create_engine(parsed, connect_args=connect_args, **kwargs)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (they are returned to callers)."""
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str | None = None) -> Config:
    """A programmatic Alembic configuration pointing at the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        # Passed as an attribute, not an option: option values go through configparser
        # interpolation, which would mangle a '%' in a password.
        config.attributes["url"] = url
    return config


def upgrade(target: Engine | str, revision: str = "head") -> None:
    """Migrate the database of ``target`` (an engine or a URL) to ``revision``."""
    engine = make_engine(target) if isinstance(target, str) else target
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Several API processes starting at once: one migrates, the others wait
                # for it (the lock ends with the transaction) and then find nothing to do.
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        if isinstance(target, str):
            engine.dispose()
    log.info("database migrated", revision=revision, backend=engine.dialect.name)
