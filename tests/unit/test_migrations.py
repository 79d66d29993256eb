"""The migrations build exactly the ORM's schema, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import StatementError

from api.db import alembic_config, make_engine, session_factory, upgrade
from api.tables import Base, OutboxRecord
from tests.postgres import PostgresCluster

TABLES = {
    "alerts",
    "alert_events",
    "outbox",
    "model_status",
    "control_events",
    "score_replies",
    "decisions",
    "case_notes",
}
HEAD = "0004"


def differences(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_upgrade_builds_the_orm_schema(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    assert differences(empty_database_url) == []


def test_comparison_would_notice_a_missing_table(empty_database_url: str) -> None:
    # Guards the test above: an empty database differs from the models.
    assert differences(empty_database_url)


def test_upgrade_twice_is_harmless(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT version_num FROM alembic_version")) == HEAD
    finally:
        engine.dispose()


def test_downgrade_removes_everything_and_upgrade_restores_it(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        assert not TABLES & set(inspect(engine).get_table_names())
        upgrade(engine)
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()
    assert differences(empty_database_url) == []


def test_upgrade_works_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'deep' / 'folder' / 'review.db'}"
    upgrade(url)  # also creates the missing folders
    assert differences(url) == []


def test_one_linear_history() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [HEAD]


def test_timestamps_come_back_aware_in_utc(database_url: str) -> None:
    engine = make_engine(database_url)
    sessions = session_factory(engine)
    local = datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    try:
        with sessions() as session:
            session.add(OutboxRecord(topic="t", key=None, value="{}", created_at=local))
            session.commit()
        with sessions() as session:
            stored = session.scalars(select(OutboxRecord.created_at)).one()
        assert stored == local
        assert stored.tzinfo is not None and stored.utcoffset() == timedelta(0)
        assert stored == datetime(2025, 3, 1, 10, 30, 15, 123456, tzinfo=UTC)
    finally:
        engine.dispose()


def test_naive_timestamps_are_refused(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with session_factory(engine)() as session:
            session.add(OutboxRecord(topic="t", value="{}", created_at=datetime(2025, 1, 1)))
            with pytest.raises(StatementError, match="naive datetime"):
                session.commit()
    finally:
        engine.dispose()


def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'review.db'}")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert (connection.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 1000
    finally:
        engine.dispose()


def test_in_memory_sqlite_is_one_shared_database() -> None:
    engine = make_engine("sqlite://")
    try:
        upgrade(engine)
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def test_processes_migrating_at_once_on_postgresql(postgres_cluster: PostgresCluster) -> None:
    # Several API workers starting together: the advisory lock lets one migrate.
    url = postgres_cluster.url(postgres_cluster.create_database())
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            upgrade(url)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert differences(url) == []
