"""Model status: the latest snapshot each model reported, and whether it is too old."""

from __future__ import annotations

import math
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.fields import NAME_MAX
from api.review.errors import Conflict, Invalid, NotFound
from api.review.records import Context, storable_text
from api.schemas import ModelInfo
from api.tables import ControlEventRecord, ModelStatusRecord
from detector.contracts import ModelStatus
from detector.settings import DetectorSettings

# A status older than this many reporting intervals is stale.
STALE_INTERVALS = 3
STATUS_INTERVAL: float = DetectorSettings.model_fields["status_interval_seconds"].default


def _finite_json(value: object) -> bool:
    """True when ``value`` (parsed JSON) holds no NaN or infinity, which JSON cannot hold."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite_json(item) for item in value.values())
    if isinstance(value, list):
        return all(_finite_json(item) for item in value)
    return True


def ingest_status(ctx: Context, *, status: ModelStatus) -> None:
    """Keep the latest status of each model; an older snapshot arriving late is ignored.

    A status the database cannot hold (over-long names, NUL, NaN figures) is ``Invalid``.
    """
    session, now = ctx.session, ctx.now()
    storable_text("model_name", status.model_name, NAME_MAX)
    storable_text("model_version", status.model_version, NAME_MAX)
    payload = status.model_dump(mode="json")
    if not _finite_json(payload):
        raise Invalid(f"status of model {status.model_name} holds a NaN or infinite number")
    for _attempt in range(2):
        record = session.get(ModelStatusRecord, status.model_name, populate_existing=True)
        if record is not None and record.emitted_at > status.emitted_at:
            return
        if record is None:
            if _retired_after(ctx, status):
                return  # sent before the model was retired, read after
            record = ModelStatusRecord(model_name=status.model_name)
            session.add(record)
        record.model_version = status.model_version
        record.deciding = status.deciding
        record.payload = payload
        record.emitted_at = status.emitted_at
        record.received_at = now
        try:
            session.commit()
            return
        except IntegrityError:
            # Another writer inserted the same model first: update its row instead.
            session.rollback()
    raise Conflict(f"status of model {status.model_name} could not be stored")


def _retired_after(ctx: Context, status: ModelStatus) -> bool:
    """Whether an admin retired ``status``'s model after the detector sent it (retiring
    forgets a model's status: one still on its way must not bring it back)."""
    query = (
        select(ControlEventRecord.at, ControlEventRecord.details)
        .where(ControlEventRecord.action == "retire_model")
        .order_by(ControlEventRecord.at.desc())
    )
    for at, details in ctx.session.execute(query):  # few: retirements are rare
        if details.get("model_name") == status.model_name:
            return bool(at >= status.emitted_at)
    return False


def _info(record: ModelStatusRecord, now: datetime, interval: float) -> ModelInfo:
    age = (now - record.received_at).total_seconds()
    return ModelInfo(
        status=ModelStatus.model_validate(record.payload, strict=False),
        received_at=record.received_at,
        stale=age > STALE_INTERVALS * interval,
    )


def model_statuses(ctx: Context, *, interval: float = STATUS_INTERVAL) -> list[ModelInfo]:
    """The latest status of every model, by name; stale after three ``interval`` seconds."""
    now = ctx.now()
    query = select(ModelStatusRecord).order_by(ModelStatusRecord.model_name)
    return [_info(record, now, interval) for record in ctx.session.scalars(query)]


def get_model_status(
    ctx: Context, *, model_name: str, interval: float = STATUS_INTERVAL
) -> ModelInfo:
    """The latest status of ``model_name``, or ``NotFound``."""
    record = ctx.session.get(ModelStatusRecord, model_name)
    if record is None:
        raise NotFound(f"no status received from model {model_name}")
    return _info(record, ctx.now(), interval)
