"""Fixtures of the review queue's tests: a database of each kind, its sessions, and a
queue of five alerts.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.db import make_engine, session_factory
from tests.unit.review_support import T0, add, make_alert


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
    return add(
        session,
        make_alert(1, score=0.61, amount=50.0, at=T0 - timedelta(minutes=50)),
        make_alert(2, score=0.95, amount=5.0, decision="block", at=T0 - timedelta(minutes=40)),
        make_alert(3, score=0.75, amount=500.0, card="card-2", at=T0 - timedelta(minutes=30)),
        make_alert(4, score=0.75, amount=20.0, terminal="term-2", at=T0 - timedelta(minutes=20)),
        make_alert(5, score=0.99, amount=1.0, card="card-2", at=T0 - timedelta(minutes=10)),
    )
