"""The detector's models: their status, and admins' changes to thresholds and the
deciding model (sent to the detector on the control topic)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import HTTPException, Path, Query, status

from api import live, review
from api.auth import Principal
from api.deps import Admin, ReviewDep, SettingsDep
from api.fields import NAME_MAX, OFFSET_MAX, PAGE_MAX
from api.routes.common import Endpoint, api_router, errors
from api.schemas import (
    NO_CONTROL,
    ControlAccepted,
    ControlEvent,
    DecidingModelIn,
    ModelInfo,
    ThresholdsIn,
)
from detector.contracts import Control, ThresholdChange

router = api_router("models")
ModelNamePath = Annotated[str, Path(min_length=1, max_length=NAME_MAX, pattern=NO_CONTROL)]


@router.get("/models", summary="Model status", response_model=list[ModelInfo])
def list_models(ctx: ReviewDep, settings: SettingsDep) -> list[ModelInfo]:
    """The latest status of every model the detector reported (deciding and challengers).

    A quality figure is ``null`` below its minimum of labels; ``quality`` always carries
    the counts behind it (frauds, legit, labelled alerts, sources, the minimums) and
    ``trend`` the last points of the quality."""
    return review.model_statuses(ctx, interval=settings.detector.status_interval_seconds)


@router.get(
    "/models/{model_name}",
    summary="One model's status",
    response_model=ModelInfo,
    responses=errors(404),
)
def get_model(model_name: ModelNamePath, ctx: ReviewDep, settings: SettingsDep) -> ModelInfo:
    """The latest status of one model."""
    interval = settings.detector.status_interval_seconds
    return review.get_model_status(ctx, model_name=model_name, interval=interval)


def _control(path: str, summary: str) -> Callable[[Endpoint], Endpoint]:
    """The route of an admin's change: accepted (202) once stored and queued."""
    return router.put(
        path,
        summary=summary,
        status_code=status.HTTP_202_ACCEPTED,
        response_model=ControlAccepted,
    )


def _send(ctx: review.Context, principal: Principal, **change: Any) -> ControlAccepted:
    """Record ``change`` (an action and its arguments) as the principal's, and queue it."""
    control = Control(
        control_id=str(uuid.uuid4()),
        requested_by=principal.name,
        requested_at=ctx.now(),
        **change,
    )
    review.record_control(ctx, control=control)
    return ControlAccepted(control_id=control.control_id, action=control.action)


@_control("/models/thresholds", "Change the decision thresholds")
@live.announces("control")
def set_thresholds(body: ThresholdsIn, principal: Admin, ctx: ReviewDep) -> ControlAccepted:
    """Send new thresholds to the running detector (admin). Capacity mode takes the
    alerts an hour the team can review, fixed mode scores, volume mode shares of
    traffic. Accepted means stored and queued for the control
    topic; the model's status reports ``last_control_id`` once applied."""
    thresholds = ThresholdChange.model_validate(body.model_dump())
    return _send(ctx, principal, action="set_thresholds", thresholds=thresholds)


@_control("/models/deciding", "Choose the deciding model")
@live.announces("control")
def set_deciding(body: DecidingModelIn, principal: Admin, ctx: ReviewDep) -> ControlAccepted:
    """Make another model decide (admin); it must be one the detector reports in
    ``GET /api/models``, else 422."""
    known = sorted(info.status.model_name for info in review.model_statuses(ctx))
    if body.model_name not in known:
        raise HTTPException(
            422,
            f"unknown model {body.model_name!r}: known models are "
            f"{', '.join(known) if known else 'none yet (no model status received)'}",
        )
    return _send(ctx, principal, action="set_deciding_model", model_name=body.model_name)


@router.get("/control/history", summary="Admin changes", response_model=list[ControlEvent])
def control_history(
    principal: Admin,
    ctx: ReviewDep,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 100,
    offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
) -> list[ControlEvent]:
    """Threshold and model changes sent to the detector, newest first (admin)."""
    return review.control_history(ctx, limit=limit, offset=offset)
