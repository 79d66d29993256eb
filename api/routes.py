"""The HTTP contract of the review service: every route under ``/api`` needs an API key.

Handlers are thin: they turn HTTP into calls of ``api.review`` (which holds the rules and
commits its own transactions) and rows into ``api.schemas``. They are plain ``def``
functions, run in the server's thread pool, because the database layer is synchronous.
``review`` errors become 404 / 409 / 422 in ``api.main``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from sqlalchemy.orm import Session

from api import review
from api.auth import Admin, Analyst, Role, Viewer, require
from api.bridge import Bridge
from api.metrics import ApiMetrics
from api.schemas import (
    FILTER_MAX,
    NO_CONTROL,
    AlertDetail,
    AlertItem,
    AlertPage,
    CardAlert,
    ControlAccepted,
    ControlEvent,
    DecidingModelIn,
    ErrorOut,
    Event,
    Me,
    ModelInfo,
    QueueStats,
    ThresholdsIn,
    VerdictIn,
    VerdictResult,
    VerdictsIn,
    VerdictsOut,
)
from detector.contracts import Control, LabelKind, ThresholdChange
from detector.settings import Settings

log = structlog.get_logger("fraudstream.api")

# Bounds that keep every value within what both databases handle.
OFFSET_MAX = 1_000_000_000
STALE_INTERVALS = 3
ERROR_STATUS = {"not_found": 404, "conflict": 409, "invalid": 422}

_DESCRIPTIONS = {
    401: "No API key, or a key that is not valid (header ``WWW-Authenticate: APIKey``).",
    403: "The key's role may not do this.",
    404: "No such alert or model.",
    409: "The alert's state forbids this: claimed by someone else, changed meanwhile, or "
    "already decided with another label.",
    422: "The request is malformed: a bad parameter or body.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the error answers (all ``{"detail": "..."}``)."""
    return {code: {"model": ErrorOut, "description": _DESCRIPTIONS[code]} for code in codes}


AUTH = (401, 403)

# Every route of this router needs at least a viewer's key; routes needing more ask for it.
router = APIRouter(
    prefix="/api",
    dependencies=[Depends(require(Role.viewer))],
    responses=errors(*AUTH, 422),
)


# --- dependencies ----------------------------------------------------------------------


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_now(request: Request) -> datetime:
    clock: Callable[[], datetime] = request.app.state.clock
    return clock()


def get_metrics(request: Request) -> ApiMetrics:
    metrics: ApiMetrics = request.app.state.metrics
    return metrics


def notify_relay(request: Request) -> None:
    """Wake the outbox relay: a new label or control is waiting."""
    bridge: Bridge | None = request.app.state.bridge
    if bridge is not None:
        bridge.notify()


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
Now = Annotated[datetime, Depends(get_now)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
AlertIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=FILTER_MAX,
        pattern=NO_CONTROL,
        description="The alert's id (from the queue).",
    ),
]
FilterText = Annotated[str | None, Query(min_length=1, max_length=FILTER_MAX, pattern=NO_CONTROL)]


def _utc(value: datetime | None, name: str) -> datetime | None:
    """``value`` in UTC (naive means UTC); one no calendar can hold is a 422, not a 500."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise HTTPException(422, f"{name} is out of range") from None


# --- conversions -----------------------------------------------------------------------


def item(row: review.AlertRow) -> AlertItem:
    return AlertItem.model_validate(row, from_attributes=True)


def card_alert(row: review.AlertRow) -> CardAlert:
    return CardAlert.model_validate(row, from_attributes=True)


def event(row: review.Event) -> Event:
    return Event.model_validate(row, from_attributes=True)


def model_info(row: review.StatusRow, now: datetime, settings: Settings) -> ModelInfo:
    age = (now - row.received_at).total_seconds()
    return ModelInfo(
        status=row.status,
        received_at=row.received_at,
        stale=age > STALE_INTERVALS * settings.status_interval_seconds,
    )


# --- alerts ------------------------------------------------------------------------------


@router.get(
    "/alerts",
    tags=["alerts"],
    summary="List alerts",
    response_model=AlertPage,
)
def list_alerts(
    session: SessionDep,
    now: Now,
    status_: Annotated[
        Literal["open", "claimed", "decided"] | None,
        Query(alias="status", description="open includes alerts whose claim expired."),
    ] = None,
    decision: Annotated[Literal["review", "block"] | None, Query()] = None,
    label: Annotated[LabelKind | None, Query(description="The verdict.")] = None,
    min_score: Annotated[float | None, Query(ge=0, le=1)] = None,
    max_score: Annotated[float | None, Query(ge=0, le=1)] = None,
    card_id: FilterText = None,
    terminal_id: FilterText = None,
    since: Annotated[datetime | None, Query(description="Alert time, inclusive.")] = None,
    until: Annotated[datetime | None, Query(description="Alert time, exclusive.")] = None,
    sort: Annotated[
        review.SortKey,
        Query(description="score / amount / age (oldest first); a leading - reverses."),
    ] = "-score",
    limit: Annotated[int, Query(ge=1, le=review.MAX_LIMIT)] = 50,
    offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
) -> AlertPage:
    """The review queue, filtered and sorted, one page at a time.

    ``total`` counts every alert matching the filters, for paging.
    """
    filters = review.AlertFilter(
        status=status_,
        decision=decision,
        label=label,
        min_score=min_score,
        max_score=max_score,
        card_id=card_id,
        terminal_id=terminal_id,
        since=_utc(since, "since"),
        until=_utc(until, "until"),
        sort=sort,
        limit=limit,
        offset=offset,
    )
    rows, total = review.list_alerts(session, filters, now)
    return AlertPage(items=[item(r) for r in rows], total=total)


@router.post(
    "/alerts/verdicts",
    tags=["alerts"],
    summary="Decide several alerts",
    response_model=VerdictsOut,
)
def decide_many(
    body: VerdictsIn,
    request: Request,
    principal: Analyst,
    session: SessionDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    now: Now,
) -> VerdictsOut:
    """Up to 500 verdicts; each succeeds or fails on its own (see each result's ``status``).

    One alert's failure neither stops nor undoes the others."""
    results = review.decide_many(
        session, body.items, principal.name, now, settings.topic_labels, change=body.change
    )
    out = []
    for result in results:
        if result.ok and result.alert is not None:
            metrics.verdicts.labels(result.alert.label or "unknown").inc()
            out.append(
                VerdictResult(
                    alert_id=result.alert_id, ok=True, status=200, alert=item(result.alert)
                )
            )
        else:
            out.append(
                VerdictResult(
                    alert_id=result.alert_id,
                    ok=False,
                    status=ERROR_STATUS.get(result.error_kind or "invalid", 422),
                    detail=result.error,
                )
            )
    notify_relay(request)
    return VerdictsOut(results=out)


@router.get(
    "/alerts/{alert_id}",
    tags=["alerts"],
    summary="One alert with its context",
    response_model=AlertDetail,
    responses=errors(404),
)
def get_alert(alert_id: AlertIdPath, session: SessionDep, now: Now) -> AlertDetail:
    """The alert, its transaction and features, the card's other alerts and the audit trail."""
    row = review.get_alert(session, alert_id, now)
    return AlertDetail(
        item=item(row),
        transaction=row.transaction,
        reasons=row.reasons,
        features=row.features,
        card_alerts=[
            card_alert(r) for r in review.card_context(session, row.card_id, alert_id, now=now)
        ],
        history=[event(e) for e in review.history(session, alert_id)],
    )


@router.get(
    "/alerts/{alert_id}/history",
    tags=["alerts"],
    summary="An alert's audit trail",
    response_model=list[Event],
    responses=errors(404),
)
def alert_history(alert_id: AlertIdPath, session: SessionDep) -> list[Event]:
    """Who did what to the alert and when, oldest first."""
    return [event(e) for e in review.history(session, alert_id)]


@router.post(
    "/alerts/{alert_id}/claim",
    tags=["alerts"],
    summary="Claim an alert",
    response_model=AlertItem,
    responses=errors(404, 409),
)
def claim(
    alert_id: AlertIdPath,
    principal: Analyst,
    session: SessionDep,
    settings: SettingsDep,
    now: Now,
) -> AlertItem:
    """Take the alert for ``claim_ttl_seconds`` so no one else works on it; claiming it
    again extends the claim. Another analyst's live claim is a 409."""
    return item(review.claim(session, alert_id, principal.name, now, settings.claim_ttl_seconds))


@router.post(
    "/alerts/{alert_id}/release",
    tags=["alerts"],
    summary="Release a claim",
    response_model=AlertItem,
    responses=errors(404, 409),
)
def release(alert_id: AlertIdPath, principal: Analyst, session: SessionDep, now: Now) -> AlertItem:
    """Give the alert back to the queue. Only the holder may, or an admin."""
    force = principal.role >= Role.admin
    return item(review.release(session, alert_id, principal.name, now, force=force))


@router.post(
    "/alerts/{alert_id}/verdict",
    tags=["alerts"],
    summary="Decide an alert",
    response_model=AlertItem,
    responses=errors(404, 409),
)
def decide(
    alert_id: AlertIdPath,
    body: VerdictIn,
    request: Request,
    principal: Analyst,
    session: SessionDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    now: Now,
) -> AlertItem:
    """Record fraud or legit; the label goes to the detector through the outbox (it is
    stored even while Kafka is down, and delivered once it is back).

    The same verdict again changes nothing; another label on a decided alert is a 409
    unless ``change`` is true.
    """
    row = review.decide(
        session,
        alert_id,
        principal.name,
        body.label,
        body.note,
        now,
        settings.topic_labels,
        change=body.change,
        version=body.version,
    )
    metrics.verdicts.labels(body.label).inc()
    notify_relay(request)
    return item(row)


@router.post(
    "/alerts/{alert_id}/reopen",
    tags=["alerts"],
    summary="Reopen a decided alert",
    response_model=AlertItem,
    responses=errors(404, 409),
)
def reopen(alert_id: AlertIdPath, principal: Analyst, session: SessionDep, now: Now) -> AlertItem:
    """Put a decided alert back in the queue; its next verdict, if different, is a change."""
    return item(review.reopen(session, alert_id, principal.name, now))


# --- queue and models ----------------------------------------------------------------------


@router.get("/me", tags=["access"], summary="Who am I", response_model=Me)
def me(principal: Viewer) -> Me:
    """The holder of the key and its role: what the page shows and allows."""
    return Me(name=principal.name, role=principal.role.name)


@router.get(
    "/queue/stats",
    tags=["queue"],
    summary="Queue figures",
    response_model=QueueStats,
)
def queue_stats(session: SessionDep, now: Now) -> QueueStats:
    """Open and claimed alerts, the oldest open alert's age, recent verdicts, the outbox."""
    return QueueStats.model_validate(review.queue_stats(session, now), from_attributes=True)


@router.get(
    "/models",
    tags=["models"],
    summary="Model status",
    response_model=list[ModelInfo],
)
def list_models(session: SessionDep, settings: SettingsDep, now: Now) -> list[ModelInfo]:
    """The latest status of every model the detector reported (deciding and challengers)."""
    return [model_info(row, now, settings) for row in review.model_statuses(session)]


@router.get(
    "/models/{model_name}",
    tags=["models"],
    summary="One model's status",
    response_model=ModelInfo,
    responses=errors(404),
)
def get_model(
    model_name: Annotated[str, Path(min_length=1, max_length=FILTER_MAX, pattern=NO_CONTROL)],
    session: SessionDep,
    settings: SettingsDep,
    now: Now,
) -> ModelInfo:
    """The latest status of one model."""
    return model_info(review.get_model_status(session, model_name), now, settings)


def _send_control(
    request: Request,
    session: Session,
    settings: Settings,
    metrics: ApiMetrics,
    control: Control,
) -> ControlAccepted:
    review.record_control(session, control, settings.topic_control, control.requested_at)
    metrics.controls.labels(control.action).inc()
    log.info(
        "control requested",
        control_id=control.control_id,
        action=control.action,
        actor=control.requested_by,
    )
    notify_relay(request)
    return ControlAccepted(control_id=control.control_id, action=control.action)


@router.put(
    "/models/thresholds",
    tags=["models"],
    summary="Change the decision thresholds",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ControlAccepted,
)
def set_thresholds(
    body: ThresholdsIn,
    request: Request,
    principal: Admin,
    session: SessionDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    now: Now,
) -> ControlAccepted:
    """Send new thresholds to the running detector (admin). Fixed mode takes scores,
    volume mode shares of traffic. Accepted means stored and queued for the control
    topic; the model's status reports ``last_control_id`` once applied."""
    control = Control(
        control_id=str(uuid.uuid4()),
        action="set_thresholds",
        thresholds=ThresholdChange.model_validate(body.model_dump()),
        requested_by=principal.name,
        requested_at=now,
    )
    return _send_control(request, session, settings, metrics, control)


@router.put(
    "/models/deciding",
    tags=["models"],
    summary="Choose the deciding model",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ControlAccepted,
)
def set_deciding(
    body: DecidingModelIn,
    request: Request,
    principal: Admin,
    session: SessionDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    now: Now,
) -> ControlAccepted:
    """Make another model decide (admin); it must be one the detector reports in
    ``GET /api/models``, else 422."""
    known = sorted(row.status.model_name for row in review.model_statuses(session))
    if body.model_name not in known:
        raise HTTPException(
            422,
            f"unknown model {body.model_name!r}: known models are "
            f"{', '.join(known) if known else 'none yet (no model status received)'}",
        )
    control = Control(
        control_id=str(uuid.uuid4()),
        action="set_deciding_model",
        model_name=body.model_name,
        requested_by=principal.name,
        requested_at=now,
    )
    return _send_control(request, session, settings, metrics, control)


@router.get(
    "/control/history",
    tags=["models"],
    summary="Admin changes",
    response_model=list[ControlEvent],
)
def control_history(
    principal: Admin,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=review.MAX_LIMIT)] = 100,
    offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
) -> list[ControlEvent]:
    """Threshold and model changes sent to the detector, newest first (admin)."""
    return [
        ControlEvent.model_validate(row, from_attributes=True)
        for row in review.control_history(session, limit, offset)
    ]
