"""The review queue's alerts: ingest, listing, filters, the card's context and the queue's
stats, on a real SQLite file and a real PostgreSQL database.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from api import review
from api.review import AlertFilter, Invalid, NotFound
from api.tables import AlertRecord
from detector.contracts import alert_id_for
from tests.unit.review_support import T0, TTL, actions, add, ctx, make_alert, page

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


# --- Listing --------------------------------------------------------------------------


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
