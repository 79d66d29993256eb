"""The HTTP contract of the review service: every route under ``/api`` needs an API key.

One router per resource: ``alerts`` (and the queue's figures), ``cases`` (a card's alerts
together), ``models`` (status and admins' control), ``policy`` (rules, lists, mode),
``access``, ``score`` (synchronous scoring), ``transactions`` (a missed fraud reported),
``detector_events`` (attacks and drifts the detector noticed) and ``events`` (the live
queue, whose stream is opened with a token instead of the key). Handlers are thin: they
turn HTTP into calls
of ``api.review`` (which holds the rules and commits its own transactions) with the
request's context from ``api.deps``, and announce their changes to the live queue
(``api.live``). They are plain ``def`` functions, run in the server's thread pool, because
the database layer is synchronous; ``score`` and the event stream are ``async``.
``review`` errors become 404 / 409 / 422 in ``api.main``.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.routes import (
    access,
    alerts,
    cases,
    detector_events,
    events,
    models,
    policy,
    score,
    transactions,
)

routers: tuple[APIRouter, ...] = (
    alerts.router,
    access.router,
    alerts.queue,
    cases.router,
    detector_events.router,
    transactions.router,
    models.router,
    score.router,
    policy.router,
    events.router,
    events.stream,
)

__all__ = ["routers"]
