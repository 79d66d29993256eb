"""Fixtures shared by every test: review databases on SQLite and PostgreSQL.

The data layer must behave the same on both, so its tests take ``database_url``, which
runs each test once per database. PostgreSQL comes from a throwaway cluster started once
per session (``tests/postgres.py``); each test gets a new database in it, copied from a
template migrated once, so tests stay fast and never see each other's rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.db import upgrade
from tests.postgres import PostgresCluster, find_bindir

TEMPLATE = "fraudstream_migrated"


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """The session's PostgreSQL server (skipped without PostgreSQL, failed on CI)."""
    bindir = find_bindir()
    if bindir is None:
        message = (
            "PostgreSQL binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or "
            "on PATH: install the postgresql package to run the PostgreSQL variants"
        )
        # On CI a missing server is a broken setup, not a reason to test less.
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    cluster = PostgresCluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """URL of an empty database on the session's PostgreSQL server."""
    return postgres_cluster.url(postgres_cluster.create_database("fraudstream"))


@pytest.fixture(scope="session")
def postgres_template(postgres_cluster: PostgresCluster) -> str:
    """A database migrated to head once, copied for every test."""
    name = postgres_cluster.create_database(TEMPLATE)
    upgrade(postgres_cluster.url(name))  # disposes its engine: a template must be idle
    return name


@pytest.fixture(params=["sqlite", "postgresql"])
def database_kind(request: pytest.FixtureRequest) -> str:
    """Which database a test runs on."""
    kind: str = request.param
    return kind


@pytest.fixture
def empty_database_url(
    database_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[str]:
    """A new, empty database (no tables) of ``database_kind``."""
    if database_kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'review.db'}"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    name = cluster.create_database()
    try:
        yield cluster.url(name)
    finally:
        cluster.drop_database(name)


@pytest.fixture
def database_url(
    database_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[str]:
    """A new database of ``database_kind``, migrated to head, for this test alone."""
    if database_kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'review.db'}"
        upgrade(url)
        yield url
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    template: str = request.getfixturevalue("postgres_template")
    name = cluster.create_database(template=template)
    try:
        yield cluster.url(name)
    finally:
        cluster.drop_database(name)
