"""The offline replay's label-arrival protocol, on small hand-built streams.

``_LabelFeed`` is driven directly (observe what was scored, ask what is ``due``) to pin
down exactly which labels arrive and when; ``evaluate`` is then run end to end on streams
whose labels do not depend on the model's scores (review capacity >= number of cards).
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta, timezone
from datetime import time as dtime

import pytest

from detector.contracts import Label, Transaction
from detector.replay.datasets import Record
from detector.replay.evaluation import EvaluationResult, LabelPolicy, _LabelFeed, evaluate

DAY1 = date(2018, 7, 1)

# (transaction id, label, source, labeled_at)
Delivered = tuple[str, str, str, datetime]


def at(day: int, hour: float = 0.0) -> datetime:
    """A UTC time on day ``day`` (1 = DAY1), ``hour`` hours after midnight."""
    midnight = datetime.combine(DAY1 + timedelta(days=day - 1), dtime(), tzinfo=UTC)
    return midnight + timedelta(hours=hour)


def end_of(day: int) -> datetime:
    return datetime.combine(DAY1 + timedelta(days=day - 1), dtime.max, tzinfo=UTC)


def tx(tx_id: str, card: str, when: datetime, amount: float = 25.0) -> Transaction:
    return Transaction(
        transaction_id=tx_id,
        timestamp=when,
        card_id=card,
        terminal_id=f"term-{card}",
        amount=amount,
    )


def rec(tx_id: str, card: str, when: datetime, fraud: bool | None = False) -> Record:
    return Record(tx(tx_id, card, when), fraud)


def due(feed: _LabelFeed, now: datetime) -> list[Delivered]:
    """The labels the feed delivers at ``now``, as comparable tuples."""
    return [_key(label) for label in feed.due(now)]


def arrive(
    feed: _LabelFeed, tx_id: str, card: str, when: datetime, score: float, truth: bool
) -> list[Delivered]:
    """One transaction as ``evaluate`` handles it: the labels due at its time are
    delivered (and returned), then it is scored and observed by the feed."""
    delivered = due(feed, when)
    feed.observe(tx_id, card, when, score, truth)
    return delivered


def _key(label: Label) -> Delivered:
    return (label.transaction_id, label.label, label.source, label.labeled_at)


# --- _LabelFeed: analyst reviews --------------------------------------------------------


def test_nothing_is_known_during_the_day_of_the_transactions() -> None:
    feed = _LabelFeed(LabelPolicy(review_capacity=5, label_delay_days=7))
    assert arrive(feed, "a1", "A", at(1, 8), 0.9, True) == []
    assert arrive(feed, "b1", "B", at(1, 9), 0.1, False) == []
    # still day 1, even at its very last microsecond: the review has not happened
    assert arrive(feed, "c1", "C", end_of(1), 0.5, False) == []


def test_review_labels_all_transactions_of_the_top_cards_by_daily_max() -> None:
    feed = _LabelFeed(LabelPolicy(review_capacity=2, label_delay_days=7))
    day1 = [
        # card A: one high score -> daily max 0.9
        ("a1", "A", 8, 0.1, False),
        ("a2", "A", 9, 0.9, True),
        ("a3", "A", 20, 0.2, False),
        # card B: a higher sum (1.8) but a lower max (0.6): not reviewed
        ("b1", "B", 10, 0.6, False),
        ("b2", "B", 11, 0.6, True),
        ("b3", "B", 12, 0.6, False),
        # card C: max 0.7
        ("c1", "C", 13, 0.7, False),
        # card D: max 0.2
        ("d1", "D", 14, 0.2, True),
    ]
    for tx_id, card, hour, score, truth in sorted(day1, key=lambda t: t[2]):
        assert arrive(feed, tx_id, card, at(1, hour), score, truth) == []

    # the first transaction of day 2 arrives: day 1's review is known before it is scored
    delivered = arrive(feed, "b4", "B", at(2, 0), 0.5, False)
    eod = end_of(1)
    assert delivered == [
        # highest card first: all of A's labels, then C's
        ("a1", "legit", "analyst", eod),
        ("a2", "fraud", "analyst", eod),
        ("a3", "legit", "analyst", eod),
        ("c1", "legit", "analyst", eod),
    ]
    # delivered once only
    assert arrive(feed, "b5", "B", at(2, 1), 0.5, False) == []


def test_review_is_delivered_at_the_next_active_day_after_a_gap() -> None:
    feed = _LabelFeed(LabelPolicy(review_capacity=1, label_delay_days=30))
    arrive(feed, "a1", "A", at(1, 10), 0.5, False)
    assert arrive(feed, "a2", "A", at(4, 6), 0.5, False) == [("a1", "legit", "analyst", end_of(1))]
    # day 4's review covers day 4 only, not day 1 again
    assert due(feed, at(5, 0)) == [("a2", "legit", "analyst", end_of(4))]


def test_review_capacity_zero_reviews_nothing() -> None:
    feed = _LabelFeed(LabelPolicy(review_capacity=0, label_delay_days=3))
    arrive(feed, "a1", "A", at(1, 10), 0.99, True)
    assert arrive(feed, "a2", "A", at(2, 0), 0.99, False) == []
    assert due(feed, at(4, 10)) == [("a1", "fraud", "chargeback", at(4, 10))]


def test_a_card_confirmed_by_review_is_not_reviewed_again() -> None:
    feed = _LabelFeed(LabelPolicy(review_capacity=1, label_delay_days=30))
    arrive(feed, "a1", "A", at(1, 10), 0.9, True)
    arrive(feed, "b1", "B", at(1, 11), 0.1, False)
    assert arrive(feed, "a2", "A", at(2, 9), 0.95, True) == [("a1", "fraud", "analyst", end_of(1))]
    # day 2: A still scores highest, but it is known to be compromised
    arrive(feed, "b2", "B", at(2, 10), 0.2, False)
    assert due(feed, at(3, 0)) == [("b2", "legit", "analyst", end_of(2))]


def test_a_legit_review_does_not_exclude_the_card_later() -> None:
    feed = _LabelFeed(LabelPolicy(review_capacity=1, label_delay_days=30))
    arrive(feed, "a1", "A", at(1, 10), 0.9, False)
    assert arrive(feed, "a2", "A", at(2, 9), 0.9, False) == [("a1", "legit", "analyst", end_of(1))]
    arrive(feed, "b2", "B", at(2, 10), 0.2, False)
    assert due(feed, at(3, 0)) == [("a2", "legit", "analyst", end_of(2))]


# --- _LabelFeed: chargebacks ------------------------------------------------------------


def test_chargebacks_arrive_exactly_after_the_delay_and_not_for_reviewed() -> None:
    feed = _LabelFeed(LabelPolicy(review_capacity=1, label_delay_days=2))
    arrive(feed, "a1", "A", at(1, 10), 0.9, False)  # reviewed
    arrive(feed, "b1", "B", at(1, 12), 0.3, True)  # chargeback at day 3, 12:00
    arrive(feed, "b2", "B", at(1, 13), 0.1, False)  # chargeback at day 3, 13:00
    assert due(feed, at(2, 0)) == [("a1", "legit", "analyst", end_of(1))]
    assert due(feed, at(3, 11)) == []  # a1's chargeback (day 3, 10:00) is swallowed
    just_before = at(3, 12) - timedelta(microseconds=1)
    assert due(feed, just_before) == []
    assert due(feed, at(3, 12)) == [("b1", "fraud", "chargeback", at(3, 12))]
    assert due(feed, at(9, 0)) == [("b2", "legit", "chargeback", at(3, 13))]
    assert due(feed, at(30, 0)) == []
    assert feed.reviewed == set()  # reviewed ids are forgotten once their chargeback passed


def test_chargebacks_come_after_the_review_and_in_time_order() -> None:
    feed = _LabelFeed(LabelPolicy(review_capacity=1, label_delay_days=1))
    arrive(feed, "c1", "C", at(1, 9), 0.2, True)
    arrive(feed, "b1", "B", at(1, 15), 0.1, False)
    arrive(feed, "a1", "A", at(1, 20), 0.5, False)  # reviewed
    assert arrive(feed, "a2", "A", at(2, 16), 0.5, False) == [
        ("a1", "legit", "analyst", end_of(1)),
        ("c1", "fraud", "chargeback", at(2, 9)),
        ("b1", "legit", "chargeback", at(2, 15)),
    ]


def test_a_fraud_chargeback_confirms_the_card_so_it_is_not_reviewed() -> None:
    feed = _LabelFeed(LabelPolicy(review_capacity=1, label_delay_days=1))
    arrive(feed, "a1", "A", at(1, 8), 0.9, False)  # A is reviewed on day 1
    arrive(feed, "x1", "X", at(1, 10), 0.5, True)  # X is not: chargeback due day 2, 10:00
    assert arrive(feed, "x2", "X", at(2, 9), 0.99, True) == [("a1", "legit", "analyst", end_of(1))]
    assert arrive(feed, "b2", "B", at(2, 11), 0.1, False) == [
        ("x1", "fraud", "chargeback", at(2, 10))
    ]
    assert "X" in feed.confirmed_fraud_cards
    # X has the top score of day 2 but is confirmed: B is reviewed instead
    assert due(feed, at(3, 8)) == [("b2", "legit", "analyst", end_of(2))]
    # X's own transactions still get their chargebacks
    assert due(feed, at(3, 9)) == [("x2", "fraud", "chargeback", at(3, 9))]


def test_a_legit_chargeback_does_not_confirm_the_card() -> None:
    feed = _LabelFeed(LabelPolicy(review_capacity=1, label_delay_days=1))
    arrive(feed, "a1", "A", at(1, 8), 0.9, False)
    arrive(feed, "x1", "X", at(1, 10), 0.5, False)
    assert arrive(feed, "x2", "X", at(2, 11), 0.99, False) == [
        ("a1", "legit", "analyst", end_of(1)),
        ("x1", "legit", "chargeback", at(2, 10)),
    ]
    assert feed.confirmed_fraud_cards == set()
    arrive(feed, "b2", "B", at(2, 12), 0.1, False)
    assert due(feed, at(3, 0)) == [("x2", "legit", "analyst", end_of(2))]


def _replay_through_feed(
    stream: list[tuple[str, str, datetime, float, bool]], policy: LabelPolicy
) -> tuple[dict[str, int], list[tuple[int, Delivered]]]:
    """Drive the feed the way ``evaluate`` does: labels due, then score and observe.

    Returns the step at which each transaction was scored, and each delivered label with
    the step it was delivered at (labels delivered at step i are known before the i-th
    transaction is scored). A final step flushes everything still due.
    """
    feed = _LabelFeed(policy)
    scored_at: dict[str, int] = {}
    delivered: list[tuple[int, Delivered]] = []
    for step, (tx_id, card, when, score, truth) in enumerate(stream):
        delivered.extend((step, d) for d in due(feed, when))
        scored_at[tx_id] = step
        feed.observe(tx_id, card, when, score, truth)
    last = stream[-1][2] + timedelta(days=policy.label_delay_days + 2)
    delivered.extend((len(stream), d) for d in due(feed, last))
    return scored_at, delivered


def _random_stream(seed: int, days: int = 10) -> list[tuple[str, str, datetime, float, bool]]:
    rng = random.Random(seed)
    stream = []
    for day in range(1, days + 1):
        for n in range(rng.randint(3, 8)):
            card = f"C{rng.randint(0, 4)}"
            stream.append((f"t{day}-{n}", card, at(day, rng.uniform(0, 23.9)), rng.random()))
    stream.sort(key=lambda s: s[2])
    return [(i, c, w, s, rng.random() < 0.2) for i, c, w, s in stream]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("capacity", [0, 1, 2, 10])
@pytest.mark.parametrize("delay", [1.0, 2.5, 7.0])
def test_every_transaction_is_labelled_once_and_only_after_it_was_scored(
    seed: int, capacity: int, delay: float
) -> None:
    stream = _random_stream(seed)
    truth = {tx_id: fraud for tx_id, _, _, _, fraud in stream}
    when = {tx_id: w for tx_id, _, w, _, _ in stream}
    scored_at, delivered = _replay_through_feed(stream, LabelPolicy(capacity, delay))

    assert Counter(d[0] for _, d in delivered) == Counter(list(truth))  # each id exactly once
    for step, (tx_id, label, source, labeled_at) in delivered:
        assert step > scored_at[tx_id]  # scored before its label is known
        assert label == ("fraud" if truth[tx_id] else "legit")
        if source == "analyst":
            assert labeled_at == datetime.combine(when[tx_id].date(), dtime.max, tzinfo=UTC)
        else:
            assert source == "chargeback"
            assert labeled_at == when[tx_id] + timedelta(days=delay)
        if step < len(stream):  # known by the time of the transaction it preceded
            assert labeled_at <= stream[step][2]
    if capacity == 0:
        assert {d[2] for _, d in delivered} == {"chargeback"}


def test_a_sub_day_delay_still_labels_each_transaction_once() -> None:
    feed = _LabelFeed(LabelPolicy(review_capacity=1, label_delay_days=0.25))
    arrive(feed, "a1", "A", at(1, 8), 0.9, False)
    assert arrive(feed, "a2", "A", at(1, 20), 0.9, False) == [
        ("a1", "legit", "chargeback", at(1, 14))
    ]
    delivered = due(feed, at(2, 0))
    assert [d[0] for d in delivered] == ["a2"]  # a1 already has its label


def test_reviews_are_never_delivered_before_their_time_with_utc_offsets() -> None:
    plus2 = timezone(timedelta(hours=2))
    feed = _LabelFeed(LabelPolicy(review_capacity=1, label_delay_days=7))
    arrive(feed, "a1", "A", datetime(2018, 7, 1, 23, 30, tzinfo=plus2), 0.5, False)
    now = datetime(2018, 7, 2, 0, 30, tzinfo=plus2)  # 2018-07-01 22:30 UTC
    delivered = arrive(feed, "a2", "A", now, 0.5, False)
    assert all(labeled_at <= now for _, _, _, labeled_at in delivered)


# --- evaluate end to end ----------------------------------------------------------------

# Three cards, two transactions each per day at 09:00 and 15:00, on days 1..5. Card C's
# day 2 transactions are fraudulent (and so are its later ones).
TEST_WEEK = DAY1 + timedelta(days=1)  # days 2..8; the replay stops before day 9


def _stream(days: int = 5) -> list[Record]:
    out = []
    for day in range(1, days + 1):
        for hour in (9, 15):
            for card in ("A", "B", "C"):
                fraud = card == "C" and day >= 2
                out.append(rec(f"{card}-{day}-{hour}", card, at(day, hour), fraud))
    return out


def _run(records: list[Record], policy: LabelPolicy) -> tuple[EvaluationResult, list[list[str]]]:
    out = io.StringIO()
    result = evaluate(records, policy=policy, test_weeks=[TEST_WEEK], k=2, scores_out=out)
    return result, list(csv.reader(io.StringIO(out.getvalue())))


def test_evaluate_delivers_labels_by_the_protocol() -> None:
    # capacity 10 >= 3 cards: every card not known to be compromised is reviewed every
    # day, whatever the scores, so the expected labels do not depend on the model
    result, _ = _run(_stream(), LabelPolicy(review_capacity=10, label_delay_days=2))

    # day 1: 6 reviewed; day 2: 6 reviewed (C confirmed fraudulent there);
    # days 3 and 4: A and B reviewed (4 each); day 5's review never comes (no day 6).
    # C's day 3 transactions get chargebacks on day 5 at 09:00 and 15:00; its day 4
    # ones would come on day 6.
    assert result.labels_by_source == {"analyst": 20, "chargeback": 2}
    assert result.throughput.labels == 22  # all learned: none arrived before its transaction
    day = {n: DAY1 + timedelta(days=n - 1) for n in range(1, 6)}
    assert result.labels_by_day == Counter(
        {
            (day[1], "analyst"): 6,
            (day[2], "analyst"): 6,
            (day[3], "analyst"): 4,
            (day[4], "analyst"): 4,
            (day[5], "chargeback"): 2,
        }
    )


def test_evaluate_learns_nothing_without_labels() -> None:
    result, rows = _run(_stream(), LabelPolicy(review_capacity=10, enabled=False))
    assert result.labels_by_source == {}
    assert result.throughput.labels == 0
    assert not result.labels_by_day
    assert len(rows) == 1 + 30  # still scores everything
    assert result.throughput.transactions == 30


def test_evaluate_writes_scores_and_stops_after_the_last_test_week() -> None:
    records = _stream(days=8)
    # day 9 is past the test week: the replay stops there, before checking ground truth
    records.append(rec("late", "A", at(9, 9), fraud=None))
    records.append(rec("later", "B", at(10, 9)))
    result, rows = _run(records, LabelPolicy(review_capacity=1, label_delay_days=2))

    assert rows[0] == ["transaction_id", "score", "decision"]
    ids = [r.transaction.transaction_id for r in records[:-2]]
    assert [r[0] for r in rows[1:]] == ids
    for _, score, decision in rows[1:]:
        assert 0.0 <= float(score) <= 1.0
        assert decision in {"allow", "review", "block"}
    assert result.throughput.transactions == len(ids)
    assert [r.transaction_id for r in result.rows] == ids
    assert sum(result.decisions.values()) == len(ids)


def test_evaluate_report() -> None:
    result, _ = _run(_stream(days=8), LabelPolicy(review_capacity=1, label_delay_days=2))
    report = result.report(dataset="hand-built")
    json.dumps(report)  # JSON-ready as it is

    assert report["dataset"] == "hand-built"
    assert [w["week_start"] for w in report["weeks"]] == [TEST_WEEK.isoformat()]
    assert report["weeks"][0]["k"] == 2
    assert report["weeks"][0]["transactions"] > 0
    assert set(report["mean"]) == {
        "auc_roc",
        "average_precision",
        "card_precision_at_k",
        "card_precision_upper_bound",
        "alert_rate",
    }
    throughput = report["throughput"]
    assert throughput["transactions"] == 48
    assert throughput["scoring_transactions_per_second"] > 0
    assert throughput["labels_learned"] == sum(report["labels_by_source"].values()) > 0
    assert set(report["labels_by_source"]) <= {"analyst", "chargeback"}
    assert report["labels_by_source"]["analyst"] > 0
    assert report["labels_by_source"]["chargeback"] > 0


def test_a_duplicate_transaction_is_scored_once() -> None:
    records = _stream(days=3)
    records.insert(4, records[1])  # "B-1-9" again, same card
    result, rows = _run(records, LabelPolicy(review_capacity=10, label_delay_days=30))

    ids = [r[0] for r in rows[1:]]
    assert len(ids) == 18
    assert ids.count("B-1-9") == 1
    assert sum(result.decisions.values()) == 18
    assert [r.transaction_id for r in result.rows].count("B-1-9") == 1
    # the duplicate is not labelled twice: days 1 and 2 reviewed, 6 each
    assert result.labels_by_source == {"analyst": 12}


def test_records_without_ground_truth_are_refused() -> None:
    records = _stream(days=2)
    records[3] = rec("no-truth", "A", records[3].transaction.timestamp, fraud=None)
    with pytest.raises(ValueError, match=r"no-truth.*no ground truth"):
        evaluate(records, test_weeks=[TEST_WEEK])
