"""Quality figures only over enough labels: below the minimum a figure is null, and the
counts (frauds, legit, labelled alerts, sources) say why; the trend keeps the gaps.

The statuses come from the real scoring core; they go through the real API (SQLite and
PostgreSQL) and the detector's Prometheus collector.
"""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from detector.contracts import Label, ModelStatus, Transaction
from detector.core import ScoringCore
from detector.flow.snapshots import freeze, thaw
from detector.metrics import DetectorMetrics
from detector.scoring import ModelState
from detector.settings import ScoringSettings
from detector.status import SlotSummary, merge_trend, quality_of
from models.quality import LabelledOutcome, QualityMinimum, QualityPoint, QualityTracker
from tests.factories import model_status
from tests.unit.test_api import VIEWER, as_, ingest

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def outcomes(
    frauds: int, legit: int, alerted_frauds: int = 0, alerted_legit: int = 0
) -> list[LabelledOutcome]:
    out = [LabelledOutcome(0.9, i < alerted_frauds, True, "chargeback") for i in range(frauds)]
    out += [LabelledOutcome(0.2, i < alerted_legit, False, "analyst") for i in range(legit)]
    return out


def test_one_labelled_alert_is_no_alert_precision() -> None:
    # One confirmed alert once read "Alert precision 100.0 %": now null, with the count.
    quality = quality_of(outcomes(1, 0, alerted_frauds=1), QualityMinimum())
    assert quality.alert_precision is None and quality.alerts == 1
    assert quality.min_alerts == 30 and quality.sources == {"chargeback": 1}


def test_24_biased_labels_are_no_auc() -> None:
    # 24 labels, 3 frauds scored below the legit ones, once read "Online AUC 0.429".
    window = [LabelledOutcome(0.1, False, True, "analyst") for _ in range(3)]
    window += [LabelledOutcome(0.5, True, False, "analyst") for _ in range(21)]
    quality = quality_of(window, QualityMinimum())
    assert (quality.auc, quality.average_precision, quality.alert_recall) == (None, None, None)
    assert (quality.frauds, quality.legit, quality.alerts) == (3, 21, 21)
    assert quality_of(window, QualityMinimum(1, 1, 1)).auc == 0.0  # the figure it hid


def test_each_figure_appears_at_its_own_minimum() -> None:
    least = QualityMinimum(frauds=30, legit=30, alerts=30)
    below = quality_of(outcomes(29, 100, alerted_frauds=29, alerted_legit=0), least)
    assert below.auc is None and below.alert_recall is None
    assert below.alert_precision is None  # 29 labelled alerts
    at = quality_of(outcomes(30, 30, alerted_frauds=15, alerted_legit=15), least)
    assert at.auc == 1.0 and at.average_precision == 1.0
    assert at.alert_precision == 0.5 and at.alert_recall == 0.5
    few_legit = quality_of(outcomes(40, 29, alerted_frauds=40), least)
    assert few_legit.auc is None and few_legit.alert_recall == 1.0
    assert few_legit.alert_precision == 1.0  # 40 labelled alerts, all fraud: exactly 100%


def test_older_stored_statuses_still_validate() -> None:
    current = model_status("logreg").model_dump(mode="json")
    for key in ("legit", "alerts", "sources", "min_frauds", "min_legit", "min_alerts"):
        del current["quality"][key]
    del current["trend"]
    old = ModelStatus.model_validate_json(json.dumps(current))
    assert old.quality.legit == 0 and old.trend == []


def label_stream(core: ScoringCore, frauds: int, legit: int, source: str = "analyst") -> None:
    """Score ``frauds + legit`` transactions, then label them."""
    ids = []
    for i in range(frauds + legit):
        tx = Transaction(
            transaction_id=f"tx-{source}-{i}",
            card_id=f"card-{i % 7}",
            terminal_id=f"term-{i % 5}",
            amount=20.0 + (500.0 if i < frauds else i % 40),
            currency="EUR",
            timestamp=T0.replace(hour=1, minute=i // 60 % 60, second=i % 60),
        )
        core.process(tx)
        ids.append((tx, i < frauds))
    for tx, is_fraud in ids:
        core.process(
            Label(
                transaction_id=tx.transaction_id,
                card_id=tx.card_id,
                label="fraud" if is_fraud else "legit",
                source=source,
                labeled_at=T0,
            )
        )


def test_the_core_publishes_null_figures_with_their_counts() -> None:
    core = ScoringCore(ScoringSettings(threshold_mode="fixed"))
    label_stream(core, frauds=12, legit=40)
    [status] = core.statuses()
    q = status.quality
    assert (q.window, q.frauds, q.legit) == (52, 12, 40)
    assert (q.min_frauds, q.min_legit, q.min_alerts) == (30, 30, 30)
    assert q.sources == {"analyst": 52}
    assert (q.auc, q.average_precision, q.alert_precision, q.alert_recall) == (None,) * 4
    assert len(status.trend) == 1 and status.trend[0].auc is None
    # a lower minimum, as an operator may set it: the same labels give figures
    lower = {"quality_min_frauds": 10, "quality_min_legit": 10, "quality_min_alerts": 1}
    core = ScoringCore(ScoringSettings(threshold_mode="fixed", **lower))
    label_stream(core, frauds=12, legit=40)
    [status] = core.statuses()
    assert status.quality.auc is not None and status.quality.alert_recall is not None
    assert status.trend[-1].auc == status.quality.auc


def test_the_trend_gains_a_point_per_status_with_new_labels_and_is_bounded() -> None:
    core = ScoringCore(ScoringSettings(threshold_mode="fixed"))
    label_stream(core, frauds=2, legit=3, source="a")
    core.statuses()
    [status] = core.statuses()  # no new label since: no new point
    assert len(status.trend) == 1
    tracker = QualityTracker(window=100, trend_points=3)
    for i in range(5):
        tracker.record(f"t{i}", float(i), 0.5, False)
        tracker.learn(f"t{i}", i % 2 == 0)
        assert tracker.mark(float(i))
    assert [p.at for p in tracker.trend()] == [2.0, 3.0, 4.0]


def test_the_trend_of_several_shards_adds_their_counts_and_keeps_gaps() -> None:
    def slot(*points: QualityPoint) -> SlotSummary:
        return SlotSummary(
            name="m",
            transactions_scored=0,
            decisions={},
            labels_learned={},
            classifier_weight=0.0,
            outcomes=[],
            volume=False,
            review=0.5,
            block=0.9,
            review_share=None,
            block_share=None,
            calibration_labels=0,
            calibration_error=None,
            minimum=QualityMinimum(20, 20, 20),
            trend=list(points),
        )

    a = slot(QualityPoint(10.0, 30, 10, 10, 5, 0.8), QualityPoint(20.0, 60, 20, 20, 10, 0.9))
    b = slot(QualityPoint(21.0, 60, 20, 20, 12, 0.7))
    first, second = merge_trend([a, b])
    # the first point: shard a alone, 10 frauds, below the minimum: a gap
    assert (first.window, first.frauds, first.auc, first.alert_precision) == (30, 10, None, None)
    # the last points go together: 40 frauds, 80 legit, 40 alerts, 22 caught
    assert (second.window, second.frauds, second.legit, second.alerts) == (120, 40, 80, 40)
    assert second.auc == 0.8 and second.alert_precision == 22 / 40
    assert second.alert_recall == 22 / 40 and second.at == datetime.fromtimestamp(21.0, UTC)


def test_labels_learned_are_net_of_changed_verdicts() -> None:
    core = ScoringCore(ScoringSettings(threshold_mode="fixed"))
    label_stream(core, frauds=3, legit=2)
    core.process(
        Label(
            transaction_id="tx-analyst-0",
            card_id="card-0",
            label="legit",
            source="analyst",
            labeled_at=T0,
        )
    )
    [status] = core.statuses()
    assert status.labels_learned == {"fraud": 2, "legit": 3}
    assert status.quality.frauds == 2


def test_a_tracker_from_an_older_snapshot_is_read_with_an_empty_trend() -> None:
    core = ScoringCore(ScoringSettings(threshold_mode="fixed"))
    label_stream(core, frauds=2, legit=2)
    state = core.model
    tracker = state.decider.quality
    # the tracker as the previous format pickled it: no trend, minimum or relabelling,
    # 3-tuples in the window
    for name in ("_trend", "_changes", "_relabelled", "minimum", "trend_points"):
        del tracker.__dict__[name]
    tracker.__dict__["_window"] = type(tracker._window)(
        (k, v[:3]) for k, v in tracker._window.items()
    )
    assert freeze(state)[0] == 6
    thawed = thaw((5, "0.1.0", pickle.dumps(state)), ModelState)
    old = thawed.decider.quality
    assert old.trend() == [] and old.relabelled == {"fraud": 0, "legit": 0}
    assert old.minimum == QualityMinimum() and len(old.window()) == 4
    assert old.window()[0].source == ""
    assert old.mark(1.0) and len(old.trend()) == 1
    assert pickle.loads(pickle.dumps(old)).trend() == old.trend()


def metric_samples(metrics: DetectorMetrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def test_prometheus_has_no_quality_gauge_below_the_minimum_but_the_counts() -> None:
    core = ScoringCore(ScoringSettings(threshold_mode="fixed"))
    label_stream(core, frauds=12, legit=40)
    metrics = DetectorMetrics()
    for status in core.statuses():
        metrics.model_status(status)
    found = metric_samples(metrics)
    for name in ("auc", "average_precision", "alert_precision", "alert_recall"):
        assert f"fraudstream_model_{name}" not in found, name
    counts = {
        name: found[f"fraudstream_model_quality_window_{name}"][0][1]
        for name in ("labels", "frauds", "legit", "alerts")
    }
    assert counts["labels"] == 52 and counts["frauds"] == 12 and counts["legit"] == 40


def test_the_api_serves_null_figures_with_their_counts(app: FastAPI, client: TestClient) -> None:
    core = ScoringCore(ScoringSettings(threshold_mode="fixed"))
    label_stream(core, frauds=12, legit=40)
    [status] = core.statuses()
    ingest(app, statuses=(status.model_copy(update={"emitted_at": T0}),))
    [served] = client.get("/api/models", headers=as_(VIEWER)).json()
    quality: dict[str, Any] = served["status"]["quality"]
    assert quality["auc"] is None and quality["alert_precision"] is None
    assert {k: quality[k] for k in ("window", "frauds", "legit", "min_frauds", "min_legit")} == {
        "window": 52,
        "frauds": 12,
        "legit": 40,
        "min_frauds": 30,
        "min_legit": 30,
    }
    assert quality["sources"] == {"analyst": 52}
    [point] = served["status"]["trend"]
    assert point["auc"] is None and point["frauds"] == 12
