"""Fixtures shared by the unit tests: the review queue's databases, sessions and a queue of
five alerts; the review service's settings, app and client."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.db import make_engine, session_factory
from api.main import create_app
from detector.settings import ApiSettings, DetectorSettings, LocalSettings, Settings
from tests.unit import review_support
from tests.unit.review_support import add, make_alert
from tests.unit.test_api import KEYS, T0, Clock


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as session:
        yield session


@pytest.fixture
def queue(session: Session) -> list[str]:
    """Five alerts of varied score, amount, age, card, terminal and decision."""
    t0 = review_support.T0
    return add(
        session,
        make_alert(1, score=0.61, amount=50.0, at=t0 - timedelta(minutes=50)),
        make_alert(2, score=0.95, amount=5.0, decision="block", at=t0 - timedelta(minutes=40)),
        make_alert(3, score=0.75, amount=500.0, card="card-2", at=t0 - timedelta(minutes=30)),
        make_alert(4, score=0.75, amount=20.0, terminal="term-2", at=t0 - timedelta(minutes=20)),
        make_alert(5, score=0.99, amount=1.0, card="card-2", at=t0 - timedelta(minutes=10)),
    )


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        local=LocalSettings(home=tmp_path),
        api=ApiSettings(database_url=database_url, api_keys=SecretStr(KEYS), claim_ttl_seconds=600),
        detector=DetectorSettings(status_interval_seconds=5),
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    app = create_app(settings, kafka=False)
    app.state.clock = Clock(T0 + timedelta(hours=1))
    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client
