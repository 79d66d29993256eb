"""Admins' changes to the running detector: audited, and queued on the control topic."""

from __future__ import annotations

import structlog
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from api.fields import CONTROL_ID_MAX, PAGE_MAX
from api.review.errors import Conflict, Invalid
from api.review.outbox import enqueue
from api.review.records import Context, check_actor, storable_text, transact
from api.schemas import ControlEvent
from api.tables import ControlEventRecord, ModelStatusRecord
from detector.contracts import Control

log = structlog.get_logger("fraudstream.api")

# Every control record has this key: one partition keeps them in order.
CONTROL_KEY = "model"


def record_control(ctx: Context, *, control: Control) -> ControlEvent:
    """Audit an admin's change and queue it for the detector, in one transaction.

    A control id already recorded is a ``Conflict`` (ids are unique; a retry with the
    same id must not send the change twice). Retiring a model forgets its last status
    (the detector reports it again if it refuses).
    """
    now = ctx.now()
    storable_text("control_id", control.control_id, CONTROL_ID_MAX)
    check_actor(control.requested_by)
    record = ControlEventRecord(
        control_id=control.control_id,
        at=control.requested_at,
        actor=control.requested_by,
        action=control.action,
        details=control.model_dump(mode="json"),
    )

    def change() -> ControlEvent:
        ctx.session.add(record)
        if control.action == "retire_model":
            retired = ModelStatusRecord.model_name == control.model_name
            ctx.session.execute(delete(ModelStatusRecord).where(retired))
        value = control.model_dump_json()
        enqueue(ctx, topic=ctx.topics.control, key=CONTROL_KEY, value=value, at=now)
        ctx.session.flush()
        return ControlEvent.model_validate(record)

    try:
        event = transact(ctx.session, control.control_id, change)
    except IntegrityError as error:
        raise Conflict(f"control {control.control_id} was already recorded") from error
    log.info(
        "control requested",
        control_id=control.control_id,
        action=control.action,
        actor=control.requested_by,
    )
    ctx.observer.control(control.action)
    return event


def control_history(ctx: Context, *, limit: int = 100, offset: int = 0) -> list[ControlEvent]:
    """Admin changes, newest first."""
    if not 1 <= limit <= PAGE_MAX:
        raise Invalid(f"limit must be between 1 and {PAGE_MAX}, not {limit}")
    if offset < 0:
        raise Invalid(f"offset must be 0 or more, not {offset}")
    query = (
        select(ControlEventRecord)
        .order_by(ControlEventRecord.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [ControlEvent.model_validate(record) for record in ctx.session.scalars(query)]
