"""Published scores are fraud probabilities: the calibrator, and how the model step uses it."""

from __future__ import annotations

import itertools
import math
import pickle
import random
from datetime import UTC, date, datetime, timedelta

import pytest

from detector.contracts import Label, Transaction
from detector.core import ScoringCore
from detector.flow.snapshots import SNAPSHOT_FORMAT, thaw
from detector.replay.evaluation import calibration_of
from detector.replay.handbook import ScoredTransaction
from detector.scoring import ModelState, ensure_models, new_model_state
from detector.settings import ScoringSettings
from detector.status import model_statuses
from models import ScoreCalibrator

START = datetime(2024, 1, 1, tzinfo=UTC)
# raw scores from 0 to 1, denser at both ends, where models put most transactions
GRID = sorted(
    {0.0, 1.0}
    | {k / 1000 for k in range(1, 1000)}
    | {10.0**-e for e in range(1, 16)}
    | {1 - 10.0**-e for e in range(1, 16)}
)


def strictly_increasing(calibrator: ScoreCalibrator) -> bool:
    values = [calibrator.predict_one(s) for s in GRID]
    return all(a < b for a, b in itertools.pairwise(values))


def prior(score: float, base_rate: float) -> float:
    odds = base_rate / (1 - base_rate) * score / (1 - score)
    return odds / (1 + odds)


# --- the calibrator ------------------------------------------------------------------------


def test_before_labels_the_prior_reads_the_raw_score_on_the_base_rate() -> None:
    calibrator = ScoreCalibrator(base_rate=0.02)
    for score in (1e-6, 0.01, 0.3, 0.5, 0.9, 0.99, 0.999):
        assert calibrator.predict_one(score) == pytest.approx(prior(score, 0.02), rel=1e-9)
    assert calibrator.predict_one(0.0) == 0.0 and calibrator.predict_one(1.0) == 1.0
    assert strictly_increasing(calibrator)
    assert calibrator.calibration_error() is None


def test_it_learns_the_fraud_rate_of_each_range_of_raw_scores() -> None:
    rng = random.Random(5)
    # a raw score that is a ranking, not a probability: the truth is 3% below 0.9, 60% above
    calibrator = ScoreCalibrator(base_rate=0.01, half_life=1_000_000)
    for _ in range(60_000):
        s = rng.random()
        calibrator.learn_one(s, rng.random() < (0.6 if s >= 0.9 else 0.03))
    for s in (0.1, 0.5, 0.8):
        assert calibrator.predict_one(s) == pytest.approx(0.03, abs=0.006)
    for s in (0.95, 0.99):  # (bins are half a unit of log-odds: 0.9 is inside one)
        assert calibrator.predict_one(s) == pytest.approx(0.6, abs=0.05)
    assert strictly_increasing(calibrator)
    error = calibrator.calibration_error()
    assert error is not None and error < 0.01


def test_it_stays_strictly_increasing_whatever_the_labels() -> None:
    rng = random.Random(9)
    calibrator = ScoreCalibrator(half_life=500)
    # the worst: high raw scores legitimate, low ones fraudulent
    for _ in range(5_000):
        s = rng.random()
        calibrator.learn_one(s, s < 0.2)
        assert calibrator.learn_one(rng.random(), rng.random() < 0.5) is None
    assert strictly_increasing(calibrator)
    assert calibrator.predict_one(0.1) < calibrator.predict_one(0.1 + 1e-9)


def test_old_labels_fade_so_the_map_follows_a_changing_model() -> None:
    rng = random.Random(2)
    calibrator = ScoreCalibrator(half_life=2_000)
    for _ in range(20_000):
        calibrator.learn_one(0.7 + rng.random() / 10, rng.random() < 0.9)
    assert calibrator.predict_one(0.75) > 0.8
    for _ in range(20_000):  # the model changed: the same raw scores are mostly legitimate
        calibrator.learn_one(0.7 + rng.random() / 10, rng.random() < 0.1)
    assert calibrator.predict_one(0.75) == pytest.approx(0.1, abs=0.03)


def test_a_revised_verdict_counts_the_transaction_once_with_the_new_truth() -> None:
    legit_then_fraud = ScoreCalibrator(half_life=1_000_000)
    fraud_once = ScoreCalibrator(half_life=1_000_000)
    for i in range(2_000):
        legit_then_fraud.learn_one(0.8, False)
        fraud_once.learn_one(0.8, i % 2 == 0)
    for _ in range(1_000):  # chargebacks after legitimate verdicts
        assert legit_then_fraud.revise_one(0.8, True) is None
    assert legit_then_fraud.predict_one(0.8) == pytest.approx(0.5, abs=0.02)
    assert fraud_once.predict_one(0.8) == pytest.approx(0.5, abs=0.02)
    for _ in range(5_000):  # more revisions than labels cannot make a rate above 1
        legit_then_fraud.revise_one(0.8, True)
    assert legit_then_fraud.predict_one(0.8) <= 1.0


def test_it_pickles_compactly_and_identically() -> None:
    calibrator = ScoreCalibrator()
    rng = random.Random(1)
    for _ in range(10_000):
        calibrator.learn_one(rng.random(), rng.random() < 0.05)
    data = pickle.dumps(calibrator, protocol=pickle.HIGHEST_PROTOCOL)
    assert len(data) < 3_000
    restored = pickle.loads(data)
    assert [restored.predict_one(s) for s in GRID] == [calibrator.predict_one(s) for s in GRID]


@pytest.mark.parametrize(
    "kwargs", [{"base_rate": 0.0}, {"base_rate": 1.0}, {"half_life": 0}, {"prior_labels": 0.0}]
)
def test_impossible_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ScoreCalibrator(**kwargs)  # type: ignore[arg-type]


# --- in the model step ----------------------------------------------------------------------


def tx(i: int, amount: float = 30.0) -> Transaction:
    return Transaction(
        transaction_id=f"tx{i}",
        timestamp=START + timedelta(minutes=10 * i),
        card_id=f"card{i % 7}",
        terminal_id=f"term{i % 3}",
        amount=amount,
    )


def label(t: Transaction, fraud: bool, source: str = "analyst") -> Label:
    return Label(
        transaction_id=t.transaction_id,
        card_id=t.card_id,
        label="fraud" if fraud else "legit",
        source=source,
        labeled_at=t.timestamp + timedelta(days=1),
    )


def test_the_published_score_is_the_calibrated_raw_score() -> None:
    core = ScoringCore(ScoringSettings(presume_legit_days=0, calibration_base_rate=0.02))
    for i in range(50):
        core.score(tx(i, 20.0 + i % 5))
    scored = core.score(tx(50, 900.0))
    raw = scored.parts.raw_score
    assert raw is not None and 0.0 < raw < 1.0
    assert scored.score == pytest.approx(prior(raw, 0.02), rel=1e-9)
    assert scored.to_decision().score == scored.score
    assert scored.score < raw  # a rare amount, but frauds are 2% of payments


def test_labels_teach_the_calibrator_the_decision_time_raw_score_once() -> None:
    core = ScoringCore(ScoringSettings(presume_legit_days=0))
    txs = [tx(i, 20.0 + i) for i in range(20)]
    raw = [core.score(t).parts.raw_score or 0.0 for t in txs][-1]
    assert raw > 0.0
    slot = core.model.decider
    before = slot.calibrator.predict_one(raw)
    for t in txs[:10]:
        core.learn(label(t, fraud=True))
    assert slot.calibrator.labels_learned == 10
    assert slot.calibrator.predict_one(raw) > before
    core.learn(label(txs[0], fraud=True, source="chargeback"))  # the same verdict again
    assert slot.calibrator.labels_learned == 10
    core.learn(label(txs[1], fraud=False, source="analyst"))  # a verdict overturned
    assert slot.calibrator.labels_learned == 11
    status = model_statuses(core.model)[0]
    assert status.calibration_labels == 11
    assert status.calibration_error is not None


def test_a_snapshot_of_format_4_loads_and_its_models_get_a_calibrator() -> None:
    config = ScoringSettings(presume_legit_days=0, calibration_base_rate=0.03)
    state = new_model_state(config)
    for slot in state.models.values():
        del slot.calibrator  # as format 4 pickled it
    older = (4, "0.1.0", pickle.dumps(state))
    assert SNAPSHOT_FORMAT == 6
    restored = ensure_models(thaw(older, ModelState), config)
    calibrator = restored.decider.calibrator
    assert calibrator.base_rate == 0.03 and calibrator.labels_learned == 0


# --- the evaluation's calibration figures ----------------------------------------------------


def row(i: int, score: float, fraud: bool) -> ScoredTransaction:
    return ScoredTransaction(f"t{i}", f"c{i}", date(2018, 7, 4), score, fraud, score >= 0.5)


def test_calibration_figures_of_scored_rows() -> None:
    rows = [row(i, 0.05, i < 5) for i in range(100)] + [row(100 + i, 0.75, i < 3) for i in range(4)]
    calibration = calibration_of(rows)
    assert calibration is not None
    assert calibration.transactions == 104
    assert calibration.share_above_half == pytest.approx(4 / 104)
    assert calibration.fraud_rate_above_half == 0.75
    bins = {b.low: b for b in calibration.bins if b.transactions}
    assert set(bins) == {0.0, 0.7}
    assert bins[0.7].mean_score == pytest.approx(0.75) and bins[0.7].fraud_rate == 0.75
    # both bins are calibrated to the hundredth: 0.05 against 5%, 0.75 against 3 in 4
    assert calibration.expected_calibration_error == pytest.approx(0.0, abs=1e-12)
    assert "ECE 0.0000" in calibration.format()
    skewed = calibration_of([row(i, 0.9, i < 1) for i in range(10)])
    assert skewed is not None and skewed.expected_calibration_error == pytest.approx(0.8)
    assert calibration_of([]) is None
    assert math.isfinite(calibration.mean_score)


def test_volume_thresholds_are_quantiles_of_raw_scores_through_the_calibration() -> None:
    core = ScoringCore(ScoringSettings(threshold_mode="volume", presume_legit_days=0))
    start = datetime(2026, 11, 2, tzinfo=UTC)
    scored = [
        core.score(
            Transaction(
                transaction_id=f"t{i}",
                timestamp=start + timedelta(minutes=i),
                card_id=f"card-{i % 40}",
                terminal_id=f"term-{i % 25}",
                amount=5.0 + (i * 7919 % 400),
            )
        )
        for i in range(1500)
    ]
    slot = core.model.decider
    window = slot.window
    # the window keeps what the model gave, not what was published
    assert list(window._recent)[-5:] == [s.parts.raw_score for s in scored[-5:]]
    assert all(s.score < s.parts.raw_score for s in scored[-5:])
    # its thresholds are on the published scale: the calibration of the raw quantile
    raw_review = float(window._review_q.get())
    assert window.review == pytest.approx(slot.calibrator.predict_one(raw_review))
    assert window.review < raw_review
    # and a snapshot keeps the mapping to its own calibrator
    again = pickle.loads(pickle.dumps(core.model))
    assert again.decider.window.scale.__self__ is again.decider.calibrator
    assert again.decider.window.review == pytest.approx(window.review)
