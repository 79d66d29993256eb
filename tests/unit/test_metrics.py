"""Handbook metrics: AUC ROC, average precision and the weekly protocol, computed by hand."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from detector.replay.handbook import ScoredTransaction, WeekReport, evaluate_week, format_table
from models.ranking import average_precision, roc_auc

# --- AUC ROC ---------------------------------------------------------------------------


def test_roc_auc_without_ties() -> None:
    # positives 0.35, 0.8; negatives 0.1, 0.4.
    # (0.35>0.1) 1 + (0.35<0.4) 0 + (0.8>0.1) 1 + (0.8>0.4) 1 = 3 of 4 pairs.
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_roc_auc_counts_ties_half() -> None:
    # positives 0.5, 0.9; negatives 0.5, 0.1.
    # (0.5=0.5) 0.5 + (0.5>0.1) 1 + (0.9>0.5) 1 + (0.9>0.1) 1 = 3.5 of 4 pairs.
    assert roc_auc([1, 0, 1, 0], [0.5, 0.5, 0.9, 0.1]) == pytest.approx(0.875)
    # Every pair tied: 0.5.
    assert roc_auc([True, False, True], [0.2, 0.2, 0.2]) == pytest.approx(0.5)
    # Perfectly inverted ranking: 0.
    assert roc_auc([1, 1, 0], [0.1, 0.2, 0.9]) == pytest.approx(0.0)


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0], [False]])
def test_roc_auc_rejects_a_single_class(labels: list[int]) -> None:
    with pytest.raises(ValueError, match="only one class"):
        roc_auc(labels, [0.5] * len(labels))


# --- average precision -----------------------------------------------------------------


def test_average_precision_perfect_ranking_is_one() -> None:
    assert average_precision([1, 1, 0, 0, 0], [0.9, 0.8, 0.3, 0.2, 0.1]) == pytest.approx(1.0)


def test_average_precision_worst_ranking() -> None:
    # Descending: 0.9 N, 0.8 N, 0.2 P (P=1/3, R=1/2), 0.1 P (P=2/4, R=1).
    # AP = (1/2)(1/3) + (1/2)(1/2) = 5/12.
    assert average_precision([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == pytest.approx(5 / 12)


def test_average_precision_groups_ties_at_one_threshold() -> None:
    # Threshold 0.8 takes {P, N}: P=1/2, R=1/2; threshold 0.5 takes {P, N}: P=2/4, R=1;
    # threshold 0.1 adds a negative but no recall. AP = (1/2)(1/2) + (1/2)(1/2) = 0.5.
    # (Ranking a tied positive first would give 1/2*1 + 1/2*2/3 = 0.833.)
    assert average_precision([1, 0, 1, 0, 0], [0.8, 0.8, 0.5, 0.5, 0.1]) == pytest.approx(0.5)
    # All scores tied: a single threshold, AP = prevalence = 1/4.
    assert average_precision([1, 0, 0, 0], [0.3, 0.3, 0.3, 0.3]) == pytest.approx(0.25)


def test_average_precision_rejects_no_positive() -> None:
    with pytest.raises(ValueError, match="no positive"):
        average_precision([0, 0, 0], [0.1, 0.2, 0.3])


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([1, 0], [0.1], "different lengths"),
        ([], [], "empty"),
        ([1, 2], [0.1, 0.2], "0/1"),
        ([1, 0], [0.1, float("nan")], "finite"),
    ],
)
def test_bad_inputs_raise(labels: list[int], scores: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        roc_auc(labels, scores)
    with pytest.raises(ValueError, match=message):
        average_precision(labels, scores)


# --- evaluate_week ---------------------------------------------------------------------

T = date(2024, 1, 15)  # week start; test days Jan 15, 16, 17 (days=3)


def d(day: int) -> date:
    """Day of January 2024 (0 = Dec 31, 2023)."""
    return date(2024, 1, 1) + timedelta(days=day - 1)


def tx(
    tid: str, card: str, day: date, score: float, fraud: bool, alerted: bool = False
) -> ScoredTransaction:
    return ScoredTransaction(tid, card, day, score, fraud, alerted)


# Known window: T-14 = Jan 1. d-8 is Jan 7 / Jan 8 / Jan 9 for test days Jan 15 / 16 / 17.
HISTORY = [
    tx("h1", "A", d(1), 0.9, True),  # fraud on T-14 exactly: A known on every test day
    tx("h2", "B", d(0), 0.9, True),  # fraud on T-15: outside the window, B never known
    tx("h3", "C", d(8), 0.9, True),  # Jan 8 = d-8 for Jan 16 (known from then on) but
    #                                  d-7 for Jan 15: C NOT known on Jan 15
    tx("h4", "D", d(5), 0.9, False),  # genuine history
    tx("h5", "E", d(14), 0.9, True),  # fraud on T-1: too recent, E never known
]
WEEK = [
    # Jan 15 (known: A)
    tx("t1", "A", d(15), 0.95, True, True),  # removed: A known
    tx("t2", "B", d(15), 0.90, True, True),
    tx("t3", "C", d(15), 0.30, True),
    tx("t4", "C", d(15), 0.70, False, True),  # C's daily max = 0.70, compromised
    tx("t5", "D", d(15), 0.80, False, True),
    tx("t6", "E", d(15), 0.20, False),
    # Jan 16 (known: A, C)
    tx("t7", "A", d(16), 0.10, False),  # removed: A known
    tx("t8", "C", d(16), 0.99, True),  # removed: C known (fraud Jan 8 = d-8)
    tx("t9", "B", d(16), 0.95, True, True),  # kept in the test set, B caught on Jan 15
    tx("t10", "D", d(16), 0.60, False),
    tx("t11", "E", d(16), 0.50, True),
    tx("t12", "F", d(16), 0.10, False),
    tx("t13", "F", d(16), 0.65, False, True),  # F's daily max 0.65 (mean would be 0.375)
    # Jan 17 (known: A, C)
    tx("t14", "E", d(17), 0.90, True, True),
    tx("t15", "D", d(17), 0.30, False),
    tx("t16", "G", d(17), 0.85, True, True),
    tx("t17", "B", d(17), 0.20, False),  # kept in the test set, B still caught
    tx("t18", "C", d(17), 0.50, True),  # removed: C known
]
AFTER = [tx("t19", "D", d(18), 0.99, True, True)]  # after the week: ignored


def hand_week() -> WeekReport:
    return evaluate_week(HISTORY + WEEK + AFTER, T, k=2, days=3)


def test_evaluate_week_removes_known_cards() -> None:
    report = hand_week()
    # Jan 15: t2..t6 kept (5), frauds t2, t3.   Jan 16: t9..t13 kept (5), frauds t9, t11.
    # Jan 17: t14..t17 kept (4), frauds t14, t16.
    assert [(p.transactions, p.frauds) for p in report.per_day] == [(5, 2), (5, 2), (4, 2)]
    assert report.transactions == 14
    assert report.frauds == 6


def test_evaluate_week_card_precision_and_upper_bound() -> None:
    report = hand_week()
    # Jan 15 candidates (daily max): B 0.90 F, D 0.80 G, C 0.70 F, E 0.20 G.
    #   top 2 = B, D -> 1 compromised -> 1/2 = 0.5. Compromised: B, C -> min(2, 2)/2 = 1.
    #   caught = {B}.
    # Jan 16 candidates (B caught): F 0.65 G, D 0.60 G, E 0.50 F.
    #   top 2 = F, D -> 0/2 = 0. Compromised: E -> min(2, 1)/2 = 0.5.
    # Jan 17 candidates (B caught): E 0.90 F, G 0.85 F, D 0.30 G.
    #   top 2 = E, G -> 2/2 = 1. Compromised: E, G -> 1.
    assert [p.day for p in report.per_day] == [d(15), d(16), d(17)]
    assert [p.card_precision_at_k for p in report.per_day] == [0.5, 0.0, 1.0]
    assert [p.compromised_cards for p in report.per_day] == [2, 1, 2]
    assert [p.upper_bound for p in report.per_day] == [1.0, 0.5, 1.0]
    assert report.card_precision_at_k == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert report.card_precision_upper_bound == pytest.approx((1.0 + 0.5 + 1.0) / 3)
    assert report.k == 2
    assert report.days == 3
    assert report.week_start == T


def test_evaluate_week_alert_rate_and_pooled_auc_ap() -> None:
    report = hand_week()
    # Alerted among the 14 kept rows: t2 t4 t5 | t9 t13 | t14 t16 = 7 (t1, removed, is not).
    assert report.alert_rate == pytest.approx(7 / 14)
    # Positives: 0.95 0.90 0.90 0.85 0.50 0.30; negatives: 0.80 0.70 0.65 0.60 0.30 0.20
    # 0.20 0.10. Negatives below each positive: 8, 8, 8, 8, 4, 3 + tie 0.5 -> 39.5 / 48.
    assert report.auc_roc == pytest.approx(39.5 / 48)
    # Descending thresholds: 0.95 (P=1, R=1/6), 0.90 (P=3/3, R=3/6), 0.85 (P=4/4, R=4/6),
    # 0.80..0.60 (no recall), 0.50 (P=5/9, R=5/6), 0.30 {P, N} (P=6/11, R=1).
    # AP = 4/6 * 1 + 1/6 * 5/9 + 1/6 * 6/11.
    assert report.average_precision == pytest.approx(4 / 6 + 5 / 54 + 1 / 11)


def test_evaluate_week_single_class_gives_none_and_divides_by_k() -> None:
    rows = [
        tx("a", "X", T, 0.9, False, True),
        tx("b", "Y", T, 0.5, False),
        tx("c", "Z", T + timedelta(days=2), 0.1, False),
    ]
    # Days T+1 has no row and is skipped; T+3.. are past the week (days=3).
    report = evaluate_week([*rows, tx("d", "W", T + timedelta(days=3), 0.2, True)], T, days=3)
    assert report.auc_roc is None
    assert report.average_precision is None
    assert report.transactions == 3
    assert [p.day for p in report.per_day] == [T, T + timedelta(days=2)]
    assert report.card_precision_at_k == 0.0
    assert report.alert_rate == pytest.approx(1 / 3)

    # One compromised card among 3, k = 100: precision 1/100 (divided by k, not by 3 cards).
    rows.append(tx("e", "Z", T, 0.2, True))
    report = evaluate_week(rows, T, k=100, days=1)
    assert report.per_day[0].card_precision_at_k == pytest.approx(0.01)
    assert report.card_precision_upper_bound == pytest.approx(0.01)


def test_evaluate_week_breaks_card_ties_by_card_id() -> None:
    # Equal daily scores: "A" (genuine) ranks before "B" (fraud), so top 1 misses B.
    rows = [tx("1", "B", T, 0.5, True), tx("2", "A", T, 0.5, False)]
    report = evaluate_week(rows, T, k=1, days=1)
    assert report.card_precision_at_k == 0.0
    assert report.card_precision_upper_bound == 1.0


def test_evaluate_week_empty_week() -> None:
    report = evaluate_week(HISTORY, T, k=2, days=3)
    assert report.transactions == 0
    assert report.per_day == []
    assert report.auc_roc is None
    assert report.card_precision_at_k == 0.0
    assert report.alert_rate == 0.0


@pytest.mark.parametrize(
    "kwargs", [{"k": 0}, {"days": 0}, {"delay_days": -1}, {"known_window_days": -1}]
)
def test_evaluate_week_rejects_bad_parameters(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        evaluate_week([], T, **kwargs)


def test_reports_serialize_to_json_and_format_as_a_table() -> None:
    report = hand_week()
    data = json.loads(json.dumps(report.to_dict()))
    assert data["week_start"] == "2024-01-15"
    assert data["per_day"][1]["upper_bound"] == 0.5
    assert json.loads(json.dumps(WEEK[0].to_dict()))["day"] == "2024-01-15"

    empty = evaluate_week([], T + timedelta(days=7), k=2)
    table = format_table([report, empty])
    lines = table.splitlines()
    assert "CP@2" in lines[0]
    assert lines[2].split() == [
        "2024-01-15",
        "14",
        "6",
        "0.823",
        "0.850",
        "0.500",
        "0.833",
        "0.500",
    ]
    assert lines[3].split()[3:5] == ["-", "-"]  # undefined AUC/AP
    assert lines[-1].split()[0] == "mean"
    assert lines[-1].split()[3] == "0.823"  # AUC mean over the weeks where it is defined
    assert len({len(line) for line in lines}) == 1  # fixed width


def test_evaluate_week_on_a_handbook_sized_replay() -> None:
    # ~250k rows: 5,000 cards x 50 days, a fraud every 97th row.
    start = T - timedelta(days=43)
    rows = [
        tx(
            f"{i}",
            f"c{i % 5000}",
            start + timedelta(days=i // 5000),
            (i * 7919 % 1000) / 1000,
            i % 97 == 0,
            i % 50 == 0,
        )
        for i in range(250_000)
    ]
    report = evaluate_week(rows, T)
    assert report.transactions > 0
    assert len(report.per_day) == 7
