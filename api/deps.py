"""The FastAPI dependencies of the routes: the caller (the holder of a valid key of a
role), the database session, the settings and the review context of a request (its
session, its time, the outbox topics and the observer that counts changes and wakes the
outbox relay)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session

from api.auth import API_KEY_HEADER, Principal, Role, identify, keyring_of
from api.bridge import Bridge
from api.metrics import ApiMetrics
from api.review import Context, Topics
from detector.settings import Settings

_api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="An API key: role viewer, analyst or admin; scorer keys may only score.",
)


def require(role: Role) -> Callable[..., Principal]:
    """A dependency: the caller's principal, if their key is valid and of ``role`` or higher."""

    def dependency(
        request: Request, key: Annotated[str | None, Depends(_api_key_header)]
    ) -> Principal:
        principal = identify(keyring_of(request), key)
        if principal.role < role:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this needs the {role.name} role; {principal.name} is {principal.role.name}",
            )
        return principal

    dependency.__name__ = f"require_{role.name}"
    return dependency


Viewer = Annotated[Principal, Depends(require(Role.viewer))]
Analyst = Annotated[Principal, Depends(require(Role.analyst))]
Admin = Annotated[Principal, Depends(require(Role.admin))]


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
