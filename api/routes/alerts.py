"""The review queue: list, read, claim, release, decide and reopen alerts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import HTTPException, Path, Query

from api import live, review
from api.auth import Role
from api.deps import Analyst, ReviewDep, SettingsDep
from api.fields import NAME_MAX, OFFSET_MAX, PAGE_MAX, AlertDecision, AlertStatus
from api.routes.common import Endpoint, api_router, errors
from api.schemas import (
    NO_CONTROL,
    AlertDetail,
    AlertItem,
    AlertPage,
    CardAlert,
    Event,
    QueueStats,
    VerdictIn,
    VerdictsIn,
    VerdictsOut,
)
from detector.contracts import LabelKind

router = api_router("alerts")
queue = api_router("queue")

AlertIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=NAME_MAX,
        pattern=NO_CONTROL,
        description="The alert's id (from the queue).",
    ),
]
FilterText = Annotated[str | None, Query(min_length=1, max_length=NAME_MAX, pattern=NO_CONTROL)]


def _change(path: str, summary: str) -> Callable[[Endpoint], Endpoint]:
    """The route of a change to one alert: it answers the alert as it is now, or 404 / 409."""
    return router.post(path, summary=summary, response_model=AlertItem, responses=errors(404, 409))


def _utc(value: datetime | None, name: str) -> datetime | None:
    """``value`` in UTC (naive means UTC); one no calendar can hold is a 422, not a 500."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise HTTPException(422, f"{name} is out of range") from None


@router.get("/alerts", summary="List alerts", response_model=AlertPage)
def list_alerts(
    ctx: ReviewDep,
    status_: Annotated[
        AlertStatus | None,
        Query(alias="status", description="open includes alerts whose claim expired."),
    ] = None,
    decision: Annotated[AlertDecision | None, Query()] = None,
    label: Annotated[LabelKind | None, Query(description="The verdict.")] = None,
    min_score: Annotated[float | None, Query(ge=0, le=1)] = None,
    max_score: Annotated[float | None, Query(ge=0, le=1)] = None,
    card_id: FilterText = None,
    terminal_id: FilterText = None,
    since: Annotated[datetime | None, Query(description="Alert time, inclusive.")] = None,
    until: Annotated[datetime | None, Query(description="Alert time, exclusive.")] = None,
    sort: Annotated[
        review.SortKey,
        Query(
            description=(
                "score / amount / age (oldest first); a leading - reverses. Ties: the"
                " oldest alert first (longest waiting), then the alert id."
            )
        ),
    ] = "-score",
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 50,
    offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
) -> AlertPage:
    """The review queue, filtered and sorted, one page at a time.

    Equal sort values (two alerts with the same score) are ordered by alert time, the
    oldest first, as it has waited longest; then by alert id, so pages are stable.
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
    items, total = review.list_alerts(ctx, filters=filters)
    return AlertPage(items=items, total=total)


@router.post("/alerts/verdicts", summary="Decide several alerts", response_model=VerdictsOut)
@live.announces("decided")
def decide_many(body: VerdictsIn, principal: Analyst, ctx: ReviewDep) -> VerdictsOut:
    """Up to 500 verdicts; each succeeds or fails on its own (see each result's ``status``).

    One alert's failure neither stops nor undoes the others."""
    results = review.decide_many(ctx, items=body.items, actor=principal.name, change=body.change)
    return VerdictsOut(results=results)


@router.get(
    "/alerts/{alert_id}",
    summary="One alert with its context",
    response_model=AlertDetail,
    responses=errors(404),
)
def get_alert(alert_id: AlertIdPath, ctx: ReviewDep) -> AlertDetail:
    """The alert, its transaction and features, the card's other alerts and the audit trail."""
    alert = review.get_alert(ctx, alert_id=alert_id)
    others = review.card_context(ctx, card_id=alert.card_id, exclude=alert_id)
    return AlertDetail(
        item=alert,  # serialised as an AlertItem: without the transaction and features
        transaction=alert.transaction,
        reasons=alert.reasons,
        features=alert.features,
        card_alerts=[CardAlert.model_validate(other) for other in others],
        history=review.history(ctx, alert_id=alert_id),
    )


@router.get(
    "/alerts/{alert_id}/history",
    summary="An alert's audit trail",
    response_model=list[Event],
    responses=errors(404),
)
def alert_history(alert_id: AlertIdPath, ctx: ReviewDep) -> list[Event]:
    """Who did what to the alert and when, oldest first."""
    return review.history(ctx, alert_id=alert_id)


@_change("/alerts/{alert_id}/claim", "Claim an alert")
@live.announces("claimed")
def claim(
    alert_id: AlertIdPath, principal: Analyst, ctx: ReviewDep, settings: SettingsDep
) -> AlertItem:
    """Take the alert for ``claim_ttl_seconds`` so no one else works on it; claiming it
    again extends the claim. Another analyst's live claim is a 409."""
    ttl = settings.api.claim_ttl_seconds
    return review.claim(ctx, alert_id=alert_id, actor=principal.name, ttl=ttl)


@_change("/alerts/{alert_id}/release", "Release a claim")
@live.announces("released")
def release(alert_id: AlertIdPath, principal: Analyst, ctx: ReviewDep) -> AlertItem:
    """Give the alert back to the queue. Only the holder may, or an admin."""
    force = principal.role >= Role.admin
    return review.release(ctx, alert_id=alert_id, actor=principal.name, force=force)


@_change("/alerts/{alert_id}/verdict", "Decide an alert")
@live.announces("decided")
def decide(alert_id: AlertIdPath, body: VerdictIn, principal: Analyst, ctx: ReviewDep) -> AlertItem:
    """Record fraud or legit; the label goes to the detector through the outbox (it is
    stored even while Kafka is down, and delivered once it is back).

    The same verdict again changes nothing; another label on a decided alert is a 409
    unless ``change`` is true.
    """
    return review.decide(
        ctx,
        alert_id=alert_id,
        actor=principal.name,
        label=body.label,
        note=body.note,
        change=body.change,
        version=body.version,
    )


@_change("/alerts/{alert_id}/reopen", "Reopen a decided alert")
@live.announces("reopened")
def reopen(alert_id: AlertIdPath, principal: Analyst, ctx: ReviewDep) -> AlertItem:
    """Put a decided alert back in the queue; its next verdict, if different, is a change."""
    return review.reopen(ctx, alert_id=alert_id, actor=principal.name)


@queue.get("/queue/stats", summary="Queue figures", response_model=QueueStats)
def queue_stats(ctx: ReviewDep) -> QueueStats:
    """Open and claimed alerts, the oldest open alert's age, recent verdicts, the outbox."""
    return review.queue_stats(ctx)
