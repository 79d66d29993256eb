"""Control messages audited and queued, and the outbox's delivery bookkeeping, on a real
SQLite file and a real PostgreSQL database.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api import review
from api.review import Conflict, Invalid
from api.tables import AlertEventRecord, ControlEventRecord, OutboxRecord
from detector.contracts import Control, ThresholdChange
from tests.unit.review_support import T0, add, ctx, make_alert, outbox

# --- Control and outbox ---------------------------------------------------------------


def control(control_id: str) -> Control:
    return Control(
        control_id=control_id,
        action="set_thresholds",
        thresholds=ThresholdChange(mode="fixed", review_threshold=0.5, block_threshold=0.8),
        requested_by="admin",
        requested_at=T0,
    )


def test_record_control_audits_and_queues_once(session: Session) -> None:
    row = review.record_control(ctx(session, T0), control=control("c-1"))
    assert (row.control_id, row.actor, row.action, row.at) == (
        "c-1",
        "admin",
        "set_thresholds",
        T0,
    )
    assert row.details["thresholds"]["review_threshold"] == 0.5
    with pytest.raises(Conflict, match="already recorded"):
        review.record_control(ctx(session, T0), control=control("c-1"))
    review.record_control(ctx(session, T0), control=control("c-2"))
    [first, second] = outbox(session)
    assert (first.topic, first.key) == ("control", "model")
    assert Control.model_validate_json(first.value) == control("c-1")
    assert json.loads(second.value)["control_id"] == "c-2"
    assert session.scalar(select(func.count()).select_from(ControlEventRecord)) == 2
    assert [c.control_id for c in review.control_history(ctx(session))] == ["c-2", "c-1"]
    assert [c.control_id for c in review.control_history(ctx(session), limit=1, offset=1)] == [
        "c-1"
    ]
    with pytest.raises(Invalid):
        review.control_history(ctx(session), limit=0)
    with pytest.raises(Invalid, match="control_id"):
        review.record_control(ctx(session, T0), control=control("c" * 65))
    assert len(outbox(session)) == 2


def test_outbox_delivery_bookkeeping(session: Session) -> None:
    ids = add(session, *(make_alert(n, card=f"card-{n}") for n in range(4)))
    for alert_id in ids:
        review.decide(ctx(session, T0), alert_id=alert_id, actor="alice", label="fraud")
    pending = review.pending_outbox(ctx(session), limit=3)
    assert [row.key for row in pending] == ["card-0", "card-1", "card-2"]
    assert [row.id for row in pending] == sorted(row.id for row in pending)
    review.mark_failed(ctx(session), ids=[pending[0].id], error="broker down " * 500)
    review.mark_failed(ctx(session), ids=[pending[0].id], error="broker down")
    review.mark_sent(ctx(session, T0), ids=[pending[1].id, pending[2].id])
    review.mark_sent(ctx(session, T0), ids=[])
    review.mark_failed(ctx(session), ids=[], error="nothing")
    left = review.pending_outbox(ctx(session))
    assert [row.key for row in left] == ["card-0", "card-3"]
    assert (left[0].attempts, left[0].last_error) == (2, "broker down")
    sent = session.get(OutboxRecord, pending[1].id, populate_existing=True)
    assert sent is not None and sent.sent_at == T0
    # A sent row is never failed again or sent twice.
    review.mark_failed(ctx(session), ids=[pending[1].id], error="late")
    review.mark_sent(ctx(session, T0 + timedelta(hours=1)), ids=[pending[1].id])
    sent = session.get(OutboxRecord, pending[1].id, populate_existing=True)
    assert sent is not None and (sent.sent_at, sent.attempts) == (T0, 0)
    assert review.queue_stats(ctx(session, T0)).outbox_pending == 2


def test_failed_error_text_is_bounded(session: Session) -> None:
    review.record_control(ctx(session, T0), control=control("c-1"))
    [row] = review.pending_outbox(ctx(session))
    review.mark_failed(ctx(session), ids=[row.id], error="x" * 10_000)
    [row] = review.pending_outbox(ctx(session))
    assert row.last_error is not None and len(row.last_error) == 2000


def test_events_reference_their_alert(session: Session) -> None:
    [alert_id] = add(session, make_alert(1))
    event_alerts = session.scalars(select(AlertEventRecord.alert_id)).all()
    assert event_alerts == [alert_id]
