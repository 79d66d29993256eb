"""Online quality: decision-time scores meet their labels, figures over a window."""

from __future__ import annotations

import pytest

from detector.contracts import ModelQuality
from detector.status import model_quality
from models.quality import LabelledOutcome, QualityMinimum, QualityTracker

DAY = 86400.0
# No minimum: the figures of a few hand-checked labels (the minimum has its own tests)
NO_MINIMUM = QualityMinimum(0, 0, 0)


def tracker_with(rows: list[tuple[str, float, bool, bool]], window: int = 100) -> QualityTracker:
    """Record (id, score, alerted) for each row, then learn its truth, in order."""
    q = QualityTracker(window=window, minimum=NO_MINIMUM)
    for i, (tx_id, score, alerted, _) in enumerate(rows):
        q.record(tx_id, float(i), score, alerted)
    for tx_id, _, _, is_fraud in rows:
        assert q.learn(tx_id, is_fraud)
    return q


# id, score at decision time, alerted then, truth
HAND_CHECKED = [
    ("a", 0.9, True, True),
    ("b", 0.8, True, False),
    ("c", 0.3, False, True),
    ("d", 0.1, False, False),
    ("e", 0.2, False, False),
]


def test_quality_figures_on_a_hand_checked_window() -> None:
    quality = model_quality(tracker_with(HAND_CHECKED))
    # AUC: fraud 0.9 beats the three legit scores, fraud 0.3 beats two of them: 5 / 6.
    # AP: ranked 0.9 (fraud) 0.8 0.3 (fraud) 0.2 0.1 -> 1/2 * 1 + 1/2 * 2/3 = 5/6.
    # Alerted a (fraud) and b (legit): precision 1/2; frauds a and c, one alerted: recall 1/2.
    assert quality.model_dump() == {
        "window": 5,
        "frauds": 2,
        "legit": 3,
        "alerts": 2,
        "sources": {"unknown": 5},
        "min_frauds": 0,
        "min_legit": 0,
        "min_alerts": 0,
        "auc": pytest.approx(5 / 6),
        "average_precision": pytest.approx(5 / 6),
        "alert_precision": 0.5,
        "alert_recall": 0.5,
        # labels that do not say how they came (origin "") count as unknown
        "by_origin": {
            "unknown": {
                "labels": 5,
                "frauds": 2,
                "alerts": 2,
                "auc": pytest.approx(5 / 6),
                "alert_precision": 0.5,
            }
        },
        "min_exploration": 100,
        "exploration_share": None,
        "allowed_fraud_rate": None,
        "estimated_recall": None,
    }


def test_undefined_figures_are_none() -> None:
    assert model_quality(QualityTracker()) == ModelQuality(
        window=0,
        frauds=0,
        min_frauds=30,
        min_legit=30,
        min_alerts=30,
        auc=None,
        average_precision=None,
        alert_precision=None,
        alert_recall=None,
        min_exploration=100,
    )
    only_legit = model_quality(tracker_with([("a", 0.9, True, False), ("b", 0.1, False, False)]))
    assert (only_legit.auc, only_legit.average_precision) == (None, None)
    assert (only_legit.alert_precision, only_legit.alert_recall) == (0.0, None)
    no_alert = model_quality(tracker_with([("a", 0.9, False, True), ("b", 0.1, False, False)]))
    assert (no_alert.auc, no_alert.alert_precision, no_alert.alert_recall) == (1.0, None, 0.0)


def test_the_window_keeps_the_most_recent_labels() -> None:
    q = tracker_with(HAND_CHECKED, window=3)
    assert [o.score for o in q.window()] == [0.3, 0.1, 0.2]
    assert model_quality(q).window == 3


def test_a_transaction_counts_once_however_often_it_is_labelled() -> None:
    q = tracker_with(HAND_CHECKED)
    assert q.learn("d", True)  # a chargeback after a legit verdict
    assert q.learn("d", True)
    assert len(q) == 5
    assert q.window()[3] == LabelledOutcome(0.1, False, True)
    assert model_quality(q).frauds == 3


def test_labels_without_a_kept_score_are_not_counted() -> None:
    q = QualityTracker()
    assert not q.learn("never-scored", True)
    assert len(q) == 0


def test_scores_waiting_beyond_the_horizon_are_dropped() -> None:
    q = QualityTracker(horizon_days=1.0)
    q.record("old", 0.0, 0.5, False)
    for i in range(QualityTracker.EXPIRE_EVERY):
        q.record(f"new{i}", 2 * DAY, 0.5, False)
    assert q.pending == QualityTracker.EXPIRE_EVERY
    assert not q.learn("old", True)
    assert q.learn("new0", True)


def test_waiting_scores_are_bounded() -> None:
    q = QualityTracker(max_pending=10)
    for i in range(QualityTracker.EXPIRE_EVERY):
        q.record(f"tx{i}", float(i), 0.5, False)
    assert q.pending == 10
    assert q.learn(f"tx{QualityTracker.EXPIRE_EVERY - 1}", True)


def test_resize_keeps_the_most_recent() -> None:
    q = tracker_with(HAND_CHECKED)
    q.resize(2)
    assert [o.score for o in q.window()] == [0.1, 0.2]
    with pytest.raises(ValueError, match="at least 1"):
        q.resize(0)
