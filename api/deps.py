"""The FastAPI dependencies of the routes: the database session, the settings and the
review context of a request (its session, its time, the outbox topics and the observer
that counts changes and wakes the outbox relay)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.bridge import Bridge
from api.metrics import ApiMetrics
from api.review import Context, Topics
from detector.settings import Settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


class AppObserver:
    """Counts verdicts and control changes, and wakes the outbox relay for their records."""

    def __init__(self, metrics: ApiMetrics, bridge: Bridge | None) -> None:
        self.metrics = metrics
        self.bridge = bridge

    def verdict(self, label: str) -> None:
        self.metrics.verdicts.labels(label).inc()
        self._wake()

    def control(self, action: str) -> None:
        self.metrics.controls.labels(action).inc()
        self._wake()

    def _wake(self) -> None:
        if self.bridge is not None:
            self.bridge.notify()


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_review(request: Request, session: SessionDep, settings: SettingsDep) -> Context:
    """The request's context: one instant of the app's clock for all it does."""
    state = request.app.state
    return Context(
        session=session,
        topics=Topics.of(settings),
        observer=AppObserver(state.metrics, state.bridge),
    ).at(state.clock())


ReviewDep = Annotated[Context, Depends(get_review)]
