"""Alembic environment for the review database.

Run programmatically by ``api.db.upgrade``, which hands over an open connection (in
``config.attributes["connection"]``) or a URL (``config.attributes["url"]``). From the
command line, ``alembic -x url=sqlite:///review.db upgrade head`` (with ``-c`` pointing
at a minimal ini whose ``script_location`` is this folder) works too; without a URL the
configured ``FRAUDSTREAM_DATABASE_URL`` (or the default SQLite file) is used.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from api.db import make_engine
from api.tables import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    if url:
        return str(url)
    from detector.settings import Settings

    return Settings().database


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
