"""Reasons that never mislead: every alert says why, in figures that read true.

A slice of the Handbook's data (or, where it is absent, the simulator's) is replayed
through the scoring core, with labels arriving some transactions after their own and
some fraud verdicts later turned legit, under each threshold mode: every review and
block has a reason, no reason reads 100.0% or "1 confirmed frauds", and the classifier's
reason never ranks above the anomaly detector's when the detector weighs more.
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from river import base

from detector.contracts import Control, Label, Rule, ThresholdChange
from detector.core import ScoringCore
from detector.items import Scored
from detector.reasons import counted, decision_reason, explain, percent
from detector.replay.datasets import Record, read_dataset
from detector.replay.simulator import SimulationConfig, simulate
from detector.scoring import frauds_learned
from detector.settings import ScoringSettings
from models import HybridScore, HybridScorer
from models.quality import QualityTracker

HANDBOOK = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "handbook"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def replay_records(limit: int) -> Iterator[Record]:
    """The first ``limit`` transactions of the Handbook's data, or of the simulator's."""
    found = sorted(HANDBOOK.glob("transactions-*.csv*")) if HANDBOOK.is_dir() else []
    if found:
        yield from read_dataset(found[0], limit=limit)
        return
    config = SimulationConfig(n_customers=500, n_terminals=2000, days=30, seed=7)
    for i, record in enumerate(simulate(config)):
        if i >= limit:
            return
        yield record


CLASSIFIER = re.compile(r"^fraud probability ([0-9.]+) from a classifier weighing")
DETECTOR = re.compile(r"rarer than .* of past transactions")
ROUNDED = re.compile(r"(?<![0-9.])(100|0)\.0+%")
BAD_PLURAL = re.compile(r"\b1 (confirmed frauds|transactions|frauds)\b")


@dataclass
class Replayed:
    alerts: list[Scored] = field(default_factory=list)
    classifier_reasons: int = 0
    relabelled: int = 0
    frauds_labelled: int = 0


def label(record: Record, is_fraud: bool, source: str) -> Label:
    tx = record.transaction
    return Label(
        transaction_id=tx.transaction_id,
        card_id=tx.card_id,
        label="fraud" if is_fraud else "legit",
        source=source,
        labeled_at=NOW,
    )


def replay(config: ScoringSettings, limit: int) -> tuple[ScoringCore, Replayed]:
    """Score ``limit`` transactions; frauds are confirmed 200 transactions later, one
    transaction in eight is labelled legit then, and every fifth fraud verdict turns
    legit 400 transactions after that (an analyst's mistake, corrected)."""
    core = ScoringCore(config)
    seen = Replayed()
    due: list[tuple[int, int, Label]] = []  # (due at, order sent, label), soonest first
    order = itertools.count()

    def later(at: int, labelled: Label) -> None:
        heapq.heappush(due, (at, next(order), labelled))

    fraud_count = 0
    for i, record in enumerate(replay_records(limit)):
        while due and due[0][0] <= i:
            core.process(heapq.heappop(due)[2])
        for out in core.process(record.transaction):
            if isinstance(out, Scored) and out.decision != "allow":
                seen.alerts.append(out)
        if record.is_fraud:
            fraud_count += 1
            seen.frauds_labelled += 1
            later(i + 200, label(record, True, "analyst"))
            if fraud_count % 5 == 0:
                later(i + 600, label(record, False, "analyst"))
                seen.relabelled += 1
        elif i % 8 == 0:
            later(i + 200, label(record, False, "presumed"))
    while due:
        core.process(heapq.heappop(due)[2])
    return core, seen


def check_reasons(alerts: list[Scored]) -> int:
    """Assert every alert's reasons are present and honest; the classifier reasons seen."""
    classifier_reasons = 0
    for scored in alerts:
        reasons = scored.reasons
        assert reasons, f"{scored.decision} without a reason: {scored.parts}"
        for reason in reasons:
            assert not ROUNDED.search(reason), reason
            assert not BAD_PLURAL.search(reason), reason
        parts = scored.parts
        ranks = [i for i, r in enumerate(reasons) if CLASSIFIER.match(r)]
        if not ranks:
            continue
        classifier_reasons += 1
        assert parts.fraud_probability is not None
        classifier_part = parts.classifier_weight * parts.fraud_probability
        detector_part = (1 - parts.classifier_weight) * parts.anomaly
        detector_ranks = [i for i, r in enumerate(reasons) if DETECTOR.search(r)]
        if detector_part > classifier_part and detector_ranks:
            assert min(detector_ranks) < ranks[0], (parts, reasons)
        assert f"weighing {percent(parts.classifier_weight, 0)} of the score" in reasons[ranks[0]]
    return classifier_reasons


@pytest.mark.slow
@pytest.mark.parametrize(
    "settings",
    [
        {"threshold_mode": "capacity", "review_capacity_per_hour": 20},
        {"threshold_mode": "volume", "review_share": 0.02, "block_share": 0.002},
        {"threshold_mode": "fixed", "review_threshold": 0.05, "block_threshold": 0.5},
    ],
    ids=["capacity", "volume", "fixed"],
)
def test_every_alert_of_a_replay_has_honest_reasons(settings: dict[str, Any]) -> None:
    config = ScoringSettings(classifier_warmup_frauds=20, **settings)
    core, seen = replay(config, 12_000)
    assert len(seen.alerts) > 50, "the replay must alert, or it proves nothing"
    assert {s.decision for s in seen.alerts} >= {"review"}
    classifier_reasons = check_reasons(seen.alerts)
    assert classifier_reasons > 0, "the classifier must have given reasons"
    # labels learned are net of the verdicts turned legit
    [status] = core.statuses()
    assert status.labels_learned["fraud"] == seen.frauds_labelled - seen.relabelled
    assert frauds_learned(core.model.decider) == status.labels_learned["fraud"]


def test_the_young_window_and_pacing_alerts_say_why() -> None:
    # A new deployment in capacity mode reviews glaring anomalies while its window is
    # young: the reason is the anomaly, or the thresholds when no feature explains it.
    config = ScoringSettings(threshold_mode="capacity", review_capacity_per_hour=5)
    _core, seen = replay(config, 3_000)
    assert seen.alerts
    check_reasons(seen.alerts)


def test_a_degraded_decision_says_so() -> None:
    config = ScoringSettings(threshold_mode="fixed")
    core = ScoringCore(config)
    core.process(
        Control(
            control_id="rule-1",
            action="put_rule",
            rule=Rule(
                name="big",
                expression="amount > 100.0",
                outcome="review",
                changed_by="ops",
                changed_at=NOW,
            ),
            requested_by="ops",
            requested_at=NOW,
        )
    )
    core.model.decider.scorer = HybridScorer(detector=FailingDetector())
    decided = []
    for record in replay_records(300):
        for out in core.process(record.transaction):
            if isinstance(out, Scored) and out.decision != "allow":
                decided.append(out)
    assert decided and all(s.reasons for s in decided)
    assert any("model score unusable" in r for s in decided for r in s.reasons)


class FailingDetector(base.AnomalyDetector):
    """An anomaly detector that fails on every transaction: the model's score is unusable."""

    def learn_one(self, x: dict[str, float]) -> None:
        pass

    def score_one(self, x: dict[str, float]) -> float:
        raise RuntimeError("the detector's state is corrupt")


def test_a_classifier_weighing_little_never_comes_first() -> None:
    features = {"amount": 400.0, "card_history_tx": 0.0, "card_amount_ratio": 1.0}
    light = HybridScore(0.02 * 0.98 + 0.98 * 0.95, 0.95, 0.98, 0.02)
    reasons = explain(features, light, terminal_id="t", history_days=30, frauds_learned=1)
    # the detector weighs 98% of the score: its reason comes first, the classifier's
    # after it, saying how little it weighs (and the one fraud it learned)
    assert reasons[0] == "amount 400.00 rarer than 95.0% of past transactions"
    classifier = (
        "fraud probability 0.98 from a classifier weighing 2% of the score, trained on "
        "1 confirmed fraud"
    )
    assert classifier in reasons[1:]
    heavy = HybridScore(0.9 * 0.98 + 0.1 * 0.95, 0.95, 0.98, 0.9)
    reasons = explain(features, heavy, terminal_id="t", history_days=30, frauds_learned=2)
    assert reasons[0].endswith("weighing 90% of the score, trained on 2 confirmed frauds")


def test_shares_never_read_100_or_0_percent_unless_exact() -> None:
    assert percent(0.99996) == "99.9%"
    assert percent(0.9995) == "99.9%"
    assert percent(0.998) == "99.8%"
    assert percent(1.0) == "100.0%"
    assert percent(0.0) == "0.0%"
    assert percent(0.00004) == "under 0.1%"
    assert percent(0.004, 0) == "under 1%"
    features = {"amount": 9000.0, "card_history_tx": 3.0, "card_amount_ratio": 2.0}
    parts = HybridScore(0.99996, 0.99996, None, 0.0)
    [reason] = explain(features, parts, terminal_id="t", history_days=30, frauds_learned=0)
    assert reason == "amount rarer than 99.9% of past transactions, overall and for this card"


def test_counts_take_the_plural_only_when_more_than_one() -> None:
    assert counted(1, "confirmed fraud") == "1 confirmed fraud"
    assert counted(2, "confirmed fraud") == "2 confirmed frauds"
    assert counted(0, "confirmed fraud") == "0 confirmed frauds"
    features = {"card_history_tx": 3.0, "terminal_frauds_7d": 1.0}
    parts = HybridScore(0.2, 0.2, None, 0.0)
    reasons = explain(features, parts, terminal_id="t", history_days=30, frauds_learned=0)
    assert reasons == ["terminal had 1 confirmed fraud in 7 days"]
    reasons = explain(
        {"card_history_tx": 3.0, "terminal_frauds_28d": 3.0},
        parts,
        terminal_id="t",
        history_days=30,
        frauds_learned=0,
    )
    assert reasons == ["terminal had 3 confirmed frauds in 28 days"]


def test_a_card_with_recent_large_payments_says_how_many_and_how_large() -> None:
    parts = HybridScore(0.2, 0.2, None, 0.0)
    features = {"card_history_tx": 12.0, "card_large_7d": 1.0, "card_max_ratio_7d": 4.26}
    reasons = explain(features, parts, terminal_id="t", history_days=30, frauds_learned=0)
    assert reasons == [
        "1 payment of this card in 7 days at 2.5x its 30-day average or more (largest 4.3x)"
    ]
    features = {"card_history_tx": 12.0, "card_large_7d": 2.0, "card_max_ratio_7d": 5.0}
    reasons = explain(features, parts, terminal_id="t", history_days=30, frauds_learned=0)
    assert reasons[0].startswith("2 payments of this card in 7 days")
    # no history: no average to compare with, no such reason
    features = {"card_history_tx": 0.0, "card_large_7d": 0.0, "card_max_ratio_7d": 1.0}
    reasons = explain(features, parts, terminal_id="t", history_days=30, frauds_learned=0)
    assert not any("payment" in r for r in reasons)


def test_a_fraud_verdict_turned_legit_is_no_fraud_learned() -> None:
    q = QualityTracker(window=10)
    q.record("a", 0.0, 0.9, True)
    q.record("b", 1.0, 0.8, True)
    q.learn("a", True, "analyst")
    q.learn("b", True, "analyst")
    recalled = q.learn("a", False, "analyst")  # the verdict on "a" changed
    assert recalled is not None and recalled.previous is True
    assert q.relabelled == {"fraud": 1, "legit": 0}


def test_the_thresholds_reason_names_score_and_threshold() -> None:
    from detector.decision import Thresholds

    parts = HybridScore(0.71, 0.4, None, 0.0)
    assert decision_reason("review", parts, Thresholds(0.6, 0.9)) == (
        "score 0.71 at or above the review threshold 0.60"
    )
    assert decision_reason("block", parts._replace(score=0.93), Thresholds(0.6, 0.9)) == (
        "score 0.93 at or above the block threshold 0.90"
    )
    young = decision_reason("review", HybridScore(0.2, 0.95, None, 0.0), Thresholds(0.6, 0.9))
    assert young.startswith("anomaly score 0.95 on a model that has seen fewer than 100 scores")


def test_a_threshold_change_keeps_reasons() -> None:
    # Thresholds lowered to review nearly everything: alerts with no feature to explain
    # them still say which threshold they reached.
    core = ScoringCore(ScoringSettings(threshold_mode="fixed"))
    core.process(
        Control(
            control_id="low",
            action="set_thresholds",
            thresholds=ThresholdChange(mode="fixed", review_threshold=0.001, block_threshold=1.0),
            requested_by="ops",
            requested_at=NOW,
        )
    )
    alerts = [
        out
        for record in replay_records(3000)
        for out in core.process(record.transaction)
        if isinstance(out, Scored) and out.decision != "allow"
    ]
    assert len(alerts) > 50
    assert all(s.reasons for s in alerts)
    assert any(r.startswith("score ") for s in alerts for r in s.reasons)
