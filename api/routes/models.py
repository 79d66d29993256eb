"""The detector's models: their status, and admins' changes to thresholds, the deciding
model and the challengers (sent to the detector on the control topic)."""

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
    ModelSpecIn,
    RollbackIn,
    ThresholdsIn,
)
from detector.contracts import Control, ModelSpec, ThresholdChange

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


def _control(
    path: str, summary: str, *codes: int, method: str = "put"
) -> Callable[[Endpoint], Endpoint]:
    """The route of an admin's change: accepted (202) once stored and queued."""
    route: Callable[..., Callable[[Endpoint], Endpoint]] = getattr(router, method)
    return route(
        path,
        summary=summary,
        status_code=status.HTTP_202_ACCEPTED,
        response_model=ControlAccepted,
        responses=errors(*codes) if codes else None,
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


@_control("/models", "Start a challenger", 409, method="post")
@live.announces("control")
def add_model(body: ModelSpecIn, principal: Admin, ctx: ReviewDep) -> ControlAccepted:
    """Start a new model (admin): a classifier kind (``logreg``, ``tree``, ``forest``) and
    its hyper-parameters, under a new name. It starts fresh, under the thresholds in
    force, and scores in shadow; 409 if a model of that name runs already."""
    spec = ModelSpec.model_validate(body.model_dump())
    known = [info.status.model_name for info in review.model_statuses(ctx)]
    if spec.name in known:
        raise HTTPException(409, f"a model named {spec.name!r} runs already")
    return _send(ctx, principal, action="add_model", model_spec=spec)


@_control("/models/{model_name}", "Retire a challenger", 404, 409, method="delete")
@live.announces("control")
def retire_model(model_name: ModelNamePath, principal: Admin, ctx: ReviewDep) -> ControlAccepted:
    """Stop a model (admin) and delete its checkpoints. The deciding model cannot be
    retired (409): make another model decide first."""
    info = review.get_model_status(ctx, model_name=model_name)
    if info.status.deciding:
        raise HTTPException(
            409, f"{model_name!r} is the deciding model: make another model decide first"
        )
    return _send(ctx, principal, action="retire_model", model_name=model_name)


@_control("/models/{model_name}/rollback", "Roll a model back", 404, method="post")
@live.announces("control")
def rollback_model(
    model_name: ModelNamePath, body: RollbackIn, principal: Admin, ctx: ReviewDep
) -> ControlAccepted:
    """Restore a model's scorer and calibration from one of its checkpoints (admin), as
    its status lists them; 422 for a checkpoint it does not list. Its version's
    generation goes up by one."""
    info = review.get_model_status(ctx, model_name=model_name)
    saved = [c.checkpoint_id for c in info.status.checkpoints]
    if body.checkpoint_id not in saved:
        raise HTTPException(
            422,
            f"model {model_name!r} has no checkpoint {body.checkpoint_id!r}; its checkpoints "
            f"are {', '.join(saved) if saved else 'none yet'}",
        )
    return _send(
        ctx,
        principal,
        action="rollback_model",
        model_name=model_name,
        checkpoint_id=body.checkpoint_id,
    )


@router.get("/control/history", summary="Admin changes", response_model=list[ControlEvent])
def control_history(
    principal: Admin,
    ctx: ReviewDep,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 100,
    offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
) -> list[ControlEvent]:
    """Threshold and model changes sent to the detector, newest first (admin)."""
    return review.control_history(ctx, limit=limit, offset=offset)
