"""Claims on the review queue's alerts: taking, renewing, releasing and expiring, on a real
SQLite file and a real PostgreSQL database.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from api import review
from api.review import Conflict, Invalid, NotFound
from tests.unit.review_support import T0, TTL, actions, add, ctx, make_alert

# --- Claims ---------------------------------------------------------------------------


def test_claim_and_release(session: Session) -> None:
    [alert_id] = add(session, make_alert(1))
    row = review.claim(ctx(session, T0), alert_id=alert_id, actor="alice", ttl=TTL)
    assert (row.status, row.claimed_by, row.claim_expires_at) == ("claimed", "alice", T0 + TTL)
    with pytest.raises(Conflict, match="claimed by alice"):
        review.claim(
            ctx(session, T0 + timedelta(minutes=1)), alert_id=alert_id, actor="bob", ttl=TTL
        )
    with pytest.raises(Conflict, match="claimed by alice"):
        review.release(ctx(session, T0 + timedelta(minutes=1)), alert_id=alert_id, actor="bob")
    renewed = review.claim(
        ctx(session, T0 + timedelta(minutes=5)), alert_id=alert_id, actor="alice", ttl=60.0
    )
    assert renewed.claim_expires_at == T0 + timedelta(minutes=6)
    released = review.release(
        ctx(session, T0 + timedelta(minutes=5)), alert_id=alert_id, actor="alice"
    )
    assert (released.status, released.claimed_by) == ("open", None)
    assert actions(session, alert_id) == ["received", "claimed", "claimed", "released"]
    # Releasing what nobody holds changes nothing.
    again = review.release(
        ctx(session, T0 + timedelta(minutes=6)), alert_id=alert_id, actor="alice"
    )
    assert again.version == released.version
    assert actions(session, alert_id)[-1] == "released"


def test_an_admin_can_force_a_release(session: Session) -> None:
    [alert_id] = add(session, make_alert(1))
    review.claim(ctx(session, T0), alert_id=alert_id, actor="alice", ttl=TTL)
    row = review.release(ctx(session, T0), alert_id=alert_id, actor="admin", force=True)
    assert row.status == "open"
    [*_, last] = review.history(ctx(session), alert_id=alert_id)
    assert (last.actor, last.action, last.details["claimed_by"]) == ("admin", "released", "alice")


def test_an_expired_claim_can_be_taken_over_and_is_audited(session: Session) -> None:
    [alert_id] = add(session, make_alert(1))
    review.claim(ctx(session, T0), alert_id=alert_id, actor="alice", ttl=TTL)
    row = review.claim(
        ctx(session, T0 + TTL), alert_id=alert_id, actor="bob", ttl=TTL
    )  # expires at T0 + TTL exactly
    assert row.claimed_by == "bob"
    events = review.history(ctx(session), alert_id=alert_id)
    assert [e.action for e in events] == ["received", "claimed", "claim_expired", "claimed"]
    assert events[2].details["claimed_by"] == "alice"


def test_claims_on_decided_or_unknown_alerts_fail(session: Session) -> None:
    [alert_id] = add(session, make_alert(1))
    review.decide(ctx(session, T0), alert_id=alert_id, actor="alice", label="fraud")
    with pytest.raises(Conflict, match="already decided"):
        review.claim(ctx(session, T0), alert_id=alert_id, actor="bob", ttl=TTL)
    with pytest.raises(Conflict, match="already decided"):
        review.release(ctx(session, T0), alert_id=alert_id, actor="alice")
    with pytest.raises(NotFound, match="nope"):
        review.claim(ctx(session, T0), alert_id="nope", actor="bob", ttl=TTL)
    with pytest.raises(NotFound):
        review.release(ctx(session, T0), alert_id="nope", actor="bob")
    with pytest.raises(Invalid):
        review.claim(ctx(session, T0), alert_id=alert_id, actor="bob", ttl=0)
    with pytest.raises(Invalid, match="out of range"):
        review.claim(ctx(session, T0), alert_id=alert_id, actor="bob", ttl=float("inf"))
