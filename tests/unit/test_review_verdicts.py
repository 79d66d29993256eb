"""Analysts' verdicts: one event and one outbox label each, changes, reopening, batches and
races, on a real SQLite file and a real PostgreSQL database.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from api import review
from api.review import Conflict, Invalid, NotFound
from api.schemas import VerdictItem
from detector.contracts import Label
from tests.unit.review_support import LABELS, T0, TTL, actions, add, ctx, make_alert, outbox


def Verdict(alert_id: str, label: str, note: str | None = None) -> VerdictItem:
    """A verdict as a batch carries it, unchecked (so that a bad label reaches the rules)."""
    return VerdictItem.model_construct(alert_id=alert_id, label=label, note=note)


# --- Verdicts -------------------------------------------------------------------------


def test_a_verdict_writes_one_event_and_one_outbox_label(session: Session) -> None:
    [alert_id] = add(session, make_alert(1, card="card-7"))
    review.claim(ctx(session, T0), alert_id=alert_id, actor="alice", ttl=TTL)
    at = T0 + timedelta(minutes=1)
    row = review.decide(
        ctx(session, at), alert_id=alert_id, actor="alice", label="fraud", note="stolen card"
    )
    assert (row.status, row.label, row.note, row.decided_by, row.decided_at) == (
        "decided",
        "fraud",
        "stolen card",
        "alice",
        at,
    )
    assert row.claimed_by is None
    [record] = outbox(session)
    assert (record.topic, record.key, record.sent_at, record.attempts) == (
        LABELS,
        "card-7",
        None,
        0,
    )
    label = Label.model_validate_json(record.value)
    assert label == Label(
        transaction_id="tx-1", card_id="card-7", label="fraud", source="analyst", labeled_at=at
    )
    [*_, last] = review.history(ctx(session), alert_id=alert_id)
    assert (last.action, last.actor, last.details["label"]) == ("decided", "alice", "fraud")


def test_the_same_verdict_twice_is_a_no_op(session: Session) -> None:
    [alert_id] = add(session, make_alert(1))
    first = review.decide(ctx(session, T0), alert_id=alert_id, actor="alice", label="legit")
    second = review.decide(
        ctx(session, T0), alert_id=alert_id, actor="bob", label="legit", note="me too"
    )
    assert second == first
    assert len(outbox(session)) == 1
    assert actions(session, alert_id) == ["received", "decided"]


def test_a_different_second_verdict_conflicts_unless_it_is_a_change(session: Session) -> None:
    [alert_id] = add(session, make_alert(1))
    review.decide(ctx(session, T0), alert_id=alert_id, actor="alice", label="legit")
    with pytest.raises(Conflict, match="already decided legit by alice"):
        review.decide(ctx(session, T0), alert_id=alert_id, actor="bob", label="fraud")
    assert len(outbox(session)) == 1
    later = T0 + timedelta(days=20)
    row = review.decide(
        ctx(session, later),
        alert_id=alert_id,
        actor="bob",
        label="fraud",
        note="chargeback",
        change=True,
    )
    assert (row.label, row.decided_by, row.decided_at) == ("fraud", "bob", later)
    labels = [Label.model_validate_json(r.value).label for r in outbox(session)]
    assert labels == ["legit", "fraud"]
    events = review.history(ctx(session), alert_id=alert_id)
    assert [e.action for e in events] == ["received", "decided", "verdict_changed"]
    assert events[-1].details["previous_label"] == "legit"


def test_another_analysts_live_claim_blocks_a_verdict(session: Session) -> None:
    [alert_id] = add(session, make_alert(1))
    review.claim(ctx(session, T0), alert_id=alert_id, actor="alice", ttl=TTL)
    with pytest.raises(Conflict, match="claimed by alice"):
        review.decide(ctx(session, T0), alert_id=alert_id, actor="bob", label="fraud")
    assert outbox(session) == []
    # After expiry, bob may decide; the expiry is audited.
    review.decide(ctx(session, T0 + TTL), alert_id=alert_id, actor="bob", label="fraud")
    assert actions(session, alert_id)[-3:] == ["claimed", "claim_expired", "decided"]


@pytest.mark.parametrize(
    ("label", "note", "message"),
    [("maybe", None, "label must be one of"), ("fraud", "x" * 2001, "2000")],
)
def test_invalid_verdicts_are_explained(
    session: Session, label: str, note: str | None, message: str
) -> None:
    [alert_id] = add(session, make_alert(1))
    with pytest.raises(Invalid, match=message):
        review.decide(ctx(session, T0), alert_id=alert_id, actor="alice", label=label, note=note)
    assert review.get_alert(ctx(session), alert_id=alert_id).status == "open"
    review.decide(
        ctx(session, T0), alert_id=alert_id, actor="alice", label="fraud", note="x" * 2000
    )


@pytest.mark.parametrize(("actor", "message"), [("", "empty"), ("x" * 129, "129")])
def test_actors_must_be_storable_names(session: Session, actor: str, message: str) -> None:
    [alert_id] = add(session, make_alert(1))
    with pytest.raises(Invalid, match=message):
        review.claim(ctx(session, T0), alert_id=alert_id, actor=actor, ttl=TTL)
    with pytest.raises(Invalid, match=message):
        review.decide(ctx(session, T0), alert_id=alert_id, actor=actor, label="fraud")
    assert actions(session, alert_id) == ["received"]


def test_verdict_on_an_unknown_alert(session: Session) -> None:
    with pytest.raises(NotFound, match="not found"):
        review.decide(ctx(session, T0), alert_id="nope", actor="alice", label="fraud")


def test_a_stale_version_is_a_conflict(session: Session) -> None:
    [alert_id] = add(session, make_alert(1))
    seen = review.get_alert(ctx(session), alert_id=alert_id)
    review.claim(ctx(session, T0), alert_id=alert_id, actor="alice", ttl=TTL, version=seen.version)
    with pytest.raises(Conflict, match="changed meanwhile"):
        review.release(ctx(session, T0), alert_id=alert_id, actor="alice", version=seen.version)
    current = review.get_alert(ctx(session, T0), alert_id=alert_id)
    assert current.version == seen.version + 1
    review.decide(
        ctx(session, T0),
        alert_id=alert_id,
        actor="alice",
        label="fraud",
        version=current.version,
    )
    # A retry of that same verdict is still a no-op, though its version is now old.
    review.decide(
        ctx(session, T0),
        alert_id=alert_id,
        actor="alice",
        label="fraud",
        version=current.version,
    )
    assert len(outbox(session)) == 1
    with pytest.raises(Conflict):
        review.reopen(ctx(session, T0), alert_id=alert_id, actor="alice", version=current.version)


def test_reopen_then_a_new_verdict_is_a_change(session: Session) -> None:
    [alert_id] = add(session, make_alert(1))
    review.decide(ctx(session, T0), alert_id=alert_id, actor="alice", label="legit")
    row = review.reopen(ctx(session, T0 + timedelta(minutes=1)), alert_id=alert_id, actor="bob")
    assert (row.status, row.label, row.decided_by) == ("open", None, None)
    with pytest.raises(Conflict, match="not decided"):
        review.reopen(ctx(session, T0), alert_id=alert_id, actor="bob")
    review.decide(
        ctx(session, T0 + timedelta(minutes=2)),
        alert_id=alert_id,
        actor="bob",
        label="fraud",
    )
    events = review.history(ctx(session), alert_id=alert_id)
    assert [e.action for e in events] == ["received", "decided", "reopened", "verdict_changed"]
    assert events[2].details["previous_label"] == "legit"
    assert events[3].details["previous_label"] == "legit"
    assert [Label.model_validate_json(r.value).label for r in outbox(session)] == [
        "legit",
        "fraud",
    ]
    # Reopened and confirmed with the label already published: no second message.
    review.reopen(ctx(session, T0 + timedelta(minutes=3)), alert_id=alert_id, actor="bob")
    review.decide(
        ctx(session, T0 + timedelta(minutes=4)),
        alert_id=alert_id,
        actor="carol",
        label="fraud",
    )
    assert len(outbox(session)) == 2
    assert actions(session, alert_id)[-1] == "decided"
    assert review.get_alert(ctx(session), alert_id=alert_id).label == "fraud"


def test_decide_many_handles_each_item_on_its_own(session: Session) -> None:
    ids = add(session, make_alert(1), make_alert(2), make_alert(3), make_alert(4))
    review.claim(ctx(session, T0), alert_id=ids[1], actor="bob", ttl=TTL)
    review.decide(ctx(session, T0), alert_id=ids[2], actor="bob", label="legit")
    results = review.decide_many(
        ctx(session, T0),
        items=[
            Verdict(ids[0], "fraud", "a"),
            Verdict(ids[1], "fraud"),  # claimed by bob
            Verdict(ids[2], "fraud"),  # decided legit
            Verdict("nope", "fraud"),
            Verdict(ids[3], "maybe"),
            Verdict(ids[3], "legit"),
        ],
        actor="alice",
    )
    assert [(r.alert_id, r.ok, r.error_kind) for r in results] == [
        (ids[0], True, None),
        (ids[1], False, "conflict"),
        (ids[2], False, "conflict"),
        ("nope", False, "not_found"),
        (ids[3], False, "invalid"),
        (ids[3], True, None),
    ]
    assert all(r.error for r in results if not r.ok)
    assert results[0].alert is not None and results[0].alert.label == "fraud"
    assert [(r.key, Label.model_validate_json(r.value).label) for r in outbox(session)] == [
        ("card-1", "legit"),
        ("card-1", "fraud"),
        ("card-1", "legit"),
    ]


def test_two_sessions_deciding_at_once_publish_one_verdict(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        [alert_id] = add(session, make_alert(1))
    with sessions() as first, sessions() as second:
        review.get_alert(ctx(second), alert_id=alert_id)  # second has read the open alert

        # Just before the second session writes, the first decides and commits.
        @event.listens_for(second, "before_flush", once=True)
        def first_wins(*_: object) -> None:
            review.decide(ctx(first, T0), alert_id=alert_id, actor="alice", label="fraud")

        with pytest.raises(Conflict, match="changed by someone else"):
            review.decide(
                ctx(second, T0), alert_id=alert_id, actor="bob", label="legit", note="mine"
            )
    with sessions() as session:
        assert len(outbox(session)) == 1
        assert actions(session, alert_id) == ["received", "decided"]
        row = review.get_alert(ctx(session), alert_id=alert_id)
        assert (row.label, row.decided_by, row.version) == ("fraud", "alice", 2)


def test_a_lost_race_leaves_no_partial_writes(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        [alert_id] = add(session, make_alert(1))
    with sessions() as first, sessions() as second:

        @event.listens_for(second, "before_flush", once=True)
        def first_claims(*_: object) -> None:
            review.claim(ctx(first, T0), alert_id=alert_id, actor="alice", ttl=TTL)

        with pytest.raises(Conflict):
            review.decide(ctx(second, T0), alert_id=alert_id, actor="bob", label="legit")
        # The loser's session is usable again.
        assert review.get_alert(ctx(second, T0), alert_id=alert_id).claimed_by == "alice"
    with sessions() as session:
        assert outbox(session) == []
        assert actions(session, alert_id) == ["received", "claimed"]


def test_concurrent_threads_deciding_one_alert_publish_once(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        [alert_id] = add(session, make_alert(1))
    workers = 8
    barrier = threading.Barrier(workers)
    outcomes: list[str] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        with sessions() as session:
            barrier.wait()
            try:
                review.decide(
                    ctx(session, T0),
                    alert_id=alert_id,
                    actor=f"analyst-{n}",
                    label="fraud",
                )
                outcome = "ok"
            except Conflict:
                outcome = "conflict"
            except Exception as error:  # anything else is a failure of the test
                outcome = repr(error)
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert set(outcomes) <= {"ok", "conflict"}, outcomes
    assert "ok" in outcomes
    with sessions() as session:
        assert len(outbox(session)) == 1
        assert actions(session, alert_id) == ["received", "decided"]


def test_history_of_an_unknown_alert(session: Session) -> None:
    with pytest.raises(NotFound):
        review.history(ctx(session), alert_id="nope")
