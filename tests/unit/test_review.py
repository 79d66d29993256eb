"""The review queue's rules, on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker

from api import review
from api.db import make_engine, session_factory
from api.review import AlertFilter, Conflict, Invalid, NotFound
from api.schemas import VerdictItem
from api.tables import AlertEventRecord, AlertRecord, ControlEventRecord, OutboxRecord
from detector.contracts import (
    Alert,
    Control,
    Label,
    ModelStatus,
    ThresholdChange,
    Transaction,
    alert_id_for,
)
from tests.factories import model_status

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(minutes=15)
LABELS = "labels"
HOSTILE = [
    "' OR '1'='1",
    "x'; DROP TABLE alerts; --",
    '"; DELETE FROM outbox; --',
    "%",
    "_",
    "\\",
    "card\u202e\u00e9\U0001f4b3",
    "a" * 128,
]


TOPICS = review.Topics(labels=LABELS, control="control")


def ctx(session: Session, now: datetime | None = None) -> review.Context:
    """The review context of ``session``, its clock stopped at ``now`` (else the real one)."""
    context = review.Context(session, topics=TOPICS)
    return context if now is None else context.at(now)


def Verdict(alert_id: str, label: str, note: str | None = None) -> VerdictItem:
    """A verdict as a batch carries it, unchecked (so that a bad label reaches the rules)."""
    return VerdictItem.model_construct(alert_id=alert_id, label=label, note=note)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as session:
        yield session


def make_alert(
    n: int,
    *,
    card: str = "card-1",
    terminal: str = "term-1",
    score: float = 0.7,
    amount: float = 10.0,
    decision: str = "review",
    at: datetime = T0,
) -> Alert:
    transaction = Transaction(
        transaction_id=f"tx-{n}",
        timestamp=at - timedelta(seconds=1),
        card_id=card,
        terminal_id=terminal,
        amount=amount,
        currency="EUR",
    )
    return Alert(
        alert_id=alert_id_for(card, f"tx-{n}"),
        transaction=transaction,
        score=score,
        decision=decision,  # type: ignore[arg-type]
        reasons=["amount far above the card's usual"],
        features={"amount": amount},
        model_name="logreg",
        model_version="1",
        created_at=at,
    )


def add(session: Session, *alerts: Alert) -> list[str]:
    for alert in alerts:
        assert review.ingest_alert(ctx(session, alert.created_at), alert=alert)
    return [alert.alert_id for alert in alerts]


def outbox(session: Session) -> list[OutboxRecord]:
    session.expire_all()
    return list(session.scalars(select(OutboxRecord).order_by(OutboxRecord.id)))


def actions(session: Session, alert_id: str) -> list[str]:
    return [event.action for event in review.history(ctx(session), alert_id=alert_id)]


def page(session: Session, now: datetime = T0, **filters: object) -> list[str]:
    rows, _ = review.list_alerts(ctx(session, now), filters=AlertFilter(**filters))  # type: ignore[arg-type]
    return [row.alert_id for row in rows]


# --- Ingest ---------------------------------------------------------------------------


def test_ingest_is_idempotent_by_alert_id(session: Session) -> None:
    alert = make_alert(1)
    assert review.ingest_alert(ctx(session, T0), alert=alert)
    assert not review.ingest_alert(ctx(session, T0 + timedelta(hours=1)), alert=alert)
    assert session.scalar(select(func.count()).select_from(AlertRecord)) == 1
    assert actions(session, alert.alert_id) == ["received"]
    row = review.get_alert(ctx(session, T0), alert_id=alert.alert_id)
    assert row.status == "open"
    assert row.version == 1
    assert row.transaction["transaction_id"] == "tx-1"
    assert row.transaction_time.tzinfo is not None
    assert row.received_at == T0


def test_ingest_race_between_two_consumers_stores_one_alert(
    sessions: sessionmaker[Session],
) -> None:
    alert = make_alert(1)
    with sessions() as first, sessions() as second:

        @event.listens_for(second, "before_flush", once=True)
        def other_consumer_wins(*_: object) -> None:
            assert review.ingest_alert(ctx(first, T0), alert=alert)

        assert not review.ingest_alert(ctx(second, T0), alert=alert)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(AlertRecord)) == 1
        assert actions(session, alert.alert_id) == ["received"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"alert_id": "a" * 37}, "alert_id is 37 characters"),
        ({"alert_id": ""}, "alert_id must not be empty"),
        ({"model_name": "m" * 129}, "model_name is 129"),
        ({"model_version": "v\x00"}, "NUL"),
        ({"features": {"amount": float("nan"), "count": float("inf")}}, "amount, count"),
        ({"card": "c\x00"}, "card_id must not contain NUL"),
    ],
)
def test_alerts_no_database_could_hold_are_invalid(
    session: Session, change: dict[str, object], message: str
) -> None:
    change = dict(change)  # the parameters are shared by both databases' runs
    alert = make_alert(1, card=str(change.pop("card", "card-1")))
    alert = alert.model_copy(update=change)
    with pytest.raises(Invalid, match=message):
        review.ingest_alert(ctx(session, T0), alert=alert)
    assert session.scalar(select(func.count()).select_from(AlertRecord)) == 0
    assert review.ingest_alert(ctx(session, T0), alert=make_alert(2))  # the session still works


def status(name: str, emitted_at: datetime, *, deciding: bool = True) -> ModelStatus:
    return model_status(
        name,
        model_version="1",
        deciding=deciding,
        transactions_scored=10,
        decisions={"allow": 9, "review": 1},
        labels_learned={"fraud": 0, "legit": 1},
        labels_by_source={"analyst": 1},
        classifier_weight=0.5,
        quality={"window": 1, "frauds": 0},
        emitted_at=emitted_at,
    )


def test_status_is_upserted_by_model_and_late_snapshots_are_ignored(session: Session) -> None:
    review.ingest_status(ctx(session, T0), status=status("logreg", T0))
    review.ingest_status(ctx(session, T0), status=status("tree", T0, deciding=False))
    review.ingest_status(ctx(session, T0), status=status("logreg", T0 + timedelta(seconds=5)))
    review.ingest_status(ctx(session, T0), status=status("logreg", T0 - timedelta(seconds=5)))
    rows = review.model_statuses(ctx(session))
    assert [row.status.model_name for row in rows] == ["logreg", "tree"]
    assert rows[0].status.emitted_at == T0 + timedelta(seconds=5)
    assert rows[0].status == status("logreg", T0 + timedelta(seconds=5))
    assert not review.get_model_status(ctx(session), model_name="tree").status.deciding
    with pytest.raises(NotFound, match="forest"):
        review.get_model_status(ctx(session), model_name="forest")


def test_statuses_no_database_could_hold_are_invalid(session: Session) -> None:
    with pytest.raises(Invalid, match="model_name"):
        review.ingest_status(ctx(session, T0), status=status("m" * 129, T0))
    nan = status("logreg", T0).model_copy(update={"classifier_weight": float("nan")})
    with pytest.raises(Invalid, match="NaN"):
        review.ingest_status(ctx(session, T0), status=nan)
    assert review.model_statuses(ctx(session)) == []


# --- Listing --------------------------------------------------------------------------


@pytest.fixture
def queue(session: Session) -> list[str]:
    """Five alerts of varied score, amount, age, card, terminal and decision."""
    return add(
        session,
        make_alert(1, score=0.61, amount=50.0, at=T0 - timedelta(minutes=50)),
        make_alert(2, score=0.95, amount=5.0, decision="block", at=T0 - timedelta(minutes=40)),
        make_alert(3, score=0.75, amount=500.0, card="card-2", at=T0 - timedelta(minutes=30)),
        make_alert(4, score=0.75, amount=20.0, terminal="term-2", at=T0 - timedelta(minutes=20)),
        make_alert(5, score=0.99, amount=1.0, card="card-2", at=T0 - timedelta(minutes=10)),
    )


@pytest.mark.parametrize(
    ("sort", "order"),
    [
        ("-score", [5, 2, 3, 4, 1]),  # equal scores: older first
        ("score", [1, 3, 4, 2, 5]),
        ("-amount", [3, 1, 4, 2, 5]),
        ("amount", [5, 2, 4, 1, 3]),
        ("-age", [5, 4, 3, 2, 1]),
        ("age", [1, 2, 3, 4, 5]),
    ],
)
def test_sorting(session: Session, queue: list[str], sort: str, order: list[int]) -> None:
    assert page(session, sort=sort) == [queue[n - 1] for n in order]


def test_default_sort_is_highest_score_first(session: Session, queue: list[str]) -> None:
    assert page(session)[0] == queue[4]


def test_filters(session: Session, queue: list[str]) -> None:
    def ids(*numbers: int) -> set[str]:
        return {queue[n - 1] for n in numbers}

    assert set(page(session, decision="block")) == ids(2)
    assert set(page(session, decision="review")) == ids(1, 3, 4, 5)
    assert set(page(session, min_score=0.75)) == ids(2, 3, 4, 5)
    assert set(page(session, max_score=0.75)) == ids(1, 3, 4)
    assert set(page(session, min_score=0.7, max_score=0.8)) == ids(3, 4)
    assert set(page(session, card_id="card-2")) == ids(3, 5)
    assert set(page(session, terminal_id="term-2")) == ids(4)
    assert set(page(session, since=T0 - timedelta(minutes=30))) == ids(3, 4, 5)
    assert set(page(session, until=T0 - timedelta(minutes=30))) == ids(1, 2)
    # Naive bounds are UTC; other offsets are converted.
    assert set(page(session, since=datetime(2025, 1, 1, 11, 45))) == ids(5)
    plus_two = timezone(timedelta(hours=2))
    assert set(page(session, since=datetime(2025, 1, 1, 13, 45, tzinfo=plus_two))) == ids(5)
    assert set(page(session, card_id="card-2", min_score=0.9)) == ids(5)


def test_pagination_is_stable_and_counts_every_match(session: Session, queue: list[str]) -> None:
    seen: list[str] = []
    for offset in range(0, 6, 2):
        rows, total = review.list_alerts(
            ctx(session, T0), filters=AlertFilter(limit=2, offset=offset)
        )
        assert total == 5
        seen += [row.alert_id for row in rows]
    assert sorted(seen) == sorted(queue)
    assert len(seen) == 5
    rows, total = review.list_alerts(ctx(session, T0), filters=AlertFilter(offset=10))
    assert (rows, total) == ([], 5)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_strings_are_plain_values(session: Session, queue: list[str], value: str) -> None:
    add(session, make_alert(9, card=value, terminal=value))
    assert page(session, card_id=value) == [alert_id_for(value, "tx-9")]
    assert page(session, terminal_id=value) == [alert_id_for(value, "tx-9")]
    assert len(page(session)) == 6  # nothing dropped, nothing deleted
    with pytest.raises(NotFound):
        review.get_alert(ctx(session), alert_id=value)
    assert [row.card_id for row in review.card_context(ctx(session), card_id=value)] == [value]


def test_nul_characters_are_refused_not_crashed_on(session: Session, queue: list[str]) -> None:
    with pytest.raises(Invalid, match="NUL"):
        page(session, card_id="a\x00b")
    with pytest.raises(NotFound):
        review.get_alert(ctx(session), alert_id="a\x00b")
    with pytest.raises(Invalid, match="NUL"):
        review.decide(
            ctx(session, T0), alert_id=queue[0], actor="alice", label="fraud", note="x\x00"
        )
    assert review.card_context(ctx(session), card_id="a\x00b") == []


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"sort": "price"}, "sort must be one of"),
        ({"sort": "score; DROP TABLE alerts"}, "sort must be one of"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"offset": -1}, "offset"),
        ({"status": "pending"}, "status"),
        ({"decision": "allow"}, "decision"),
        ({"label": "maybe"}, "label"),
        ({"min_score": 0.9, "max_score": 0.1}, "min_score"),
        ({"since": T0, "until": T0 - timedelta(seconds=1)}, "since"),
    ],
)
def test_invalid_filters_are_explained(
    session: Session, filters: dict[str, object], message: str
) -> None:
    with pytest.raises(Invalid, match=message):
        review.list_alerts(ctx(session, T0), filters=AlertFilter(**filters))  # type: ignore[arg-type]


def test_limit_bounds_are_inclusive(session: Session, queue: list[str]) -> None:
    assert len(page(session, limit=1)) == 1
    assert len(page(session, limit=500)) == 5


def test_expired_claims_count_as_open(session: Session, queue: list[str]) -> None:
    review.claim(ctx(session, T0), alert_id=queue[0], actor="alice", ttl=TTL)
    review.claim(
        ctx(session, T0 - timedelta(hours=1)), alert_id=queue[1], actor="bob", ttl=TTL
    )  # long expired
    review.decide(ctx(session, T0), alert_id=queue[2], actor="alice", label="fraud")
    assert set(page(session, status="claimed")) == {queue[0]}
    assert set(page(session, status="open")) == {queue[1], queue[3], queue[4]}
    assert set(page(session, status="decided")) == {queue[2]}
    assert set(page(session, label="fraud")) == {queue[2]}
    expired = review.get_alert(ctx(session, T0), alert_id=queue[1])
    assert (expired.status, expired.claimed_by, expired.claim_expires_at) == ("open", None, None)
    live = review.get_alert(ctx(session, T0), alert_id=queue[0])
    assert (live.status, live.claimed_by, live.claim_expires_at) == ("claimed", "alice", T0 + TTL)
    # Once the claim runs out, the alert is open to everyone.
    assert queue[0] in page(session, now=T0 + TTL, status="open")


def test_card_context_lists_the_cards_other_alerts_newest_first(
    session: Session, queue: list[str]
) -> None:
    review.decide(
        ctx(session, T0), alert_id=queue[1], actor="alice", label="legit", note="known customer"
    )
    rows = review.card_context(ctx(session, T0), card_id="card-1", exclude=queue[3])
    assert [row.alert_id for row in rows] == [queue[1], queue[0]]
    assert (rows[0].decision, rows[0].status, rows[0].label) == ("block", "decided", "legit")
    assert [r.alert_id for r in review.card_context(ctx(session), card_id="card-1", limit=1)] == [
        queue[3]
    ]
    assert review.card_context(ctx(session), card_id="card-unknown") == []


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


# --- Stats ----------------------------------------------------------------------------


def test_queue_stats(session: Session, queue: list[str]) -> None:
    empty = review.queue_stats(ctx(session, T0 - timedelta(days=1)))
    assert empty.open == 5  # the alerts exist, whatever the clock says
    review.claim(
        ctx(session, T0), alert_id=queue[0], actor="alice", ttl=TTL
    )  # live claim on the oldest
    review.claim(
        ctx(session, T0 - timedelta(hours=2)), alert_id=queue[1], actor="bob", ttl=TTL
    )  # expired: open
    review.decide(
        ctx(session, T0 - timedelta(minutes=5)),
        alert_id=queue[2],
        actor="alice",
        label="fraud",
    )
    review.decide(
        ctx(session, T0 - timedelta(hours=2)),
        alert_id=queue[3],
        actor="alice",
        label="legit",
    )
    stats = review.queue_stats(ctx(session, T0))
    assert (stats.open, stats.claimed, stats.decided) == (2, 1, 2)
    assert stats.oldest_open_age_seconds == pytest.approx(40 * 60)  # alert 2
    assert stats.verdicts_last_hour == {"fraud": 1, "legit": 0}
    assert stats.outbox_pending == 2


def test_queue_stats_of_an_empty_queue(session: Session) -> None:
    stats = review.queue_stats(ctx(session, T0))
    assert (stats.open, stats.claimed, stats.decided, stats.outbox_pending) == (0, 0, 0, 0)
    assert stats.oldest_open_age_seconds is None
    assert stats.verdicts_last_hour == {"fraud": 0, "legit": 0}


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
