"""On a replay, published scores are fraud probabilities (the property, measured).

The Handbook's simulation, scaled down (500 cards, 5,000 terminals, 8 weeks), is replayed
through the scoring core with labels arriving as ``fraudstream evaluate`` delivers them:
analysts review the 10 highest-scored cards each day, every other label comes 7 days
later. The calibration's half-life is 5,000 labels, about five days of this traffic, as
the default 50,000 is about five days of the Handbook's.

Measured over the last three weeks with seeds 1, 2 and 3: ECE 0.012, 0.009 and 0.008;
mean score 0.033, 0.029, 0.027 against fraud rates 0.045, 0.037, 0.035; 1.6% to 2.0%
of transactions score 0.5 or more, 96% to 98% of them fraud (the raw scores before
calibration: about half above 0.5 before labels). The bounds leave room for the seed.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from detector.replay.evaluation import LabelPolicy, evaluate
from detector.replay.simulator import SimulationConfig, simulate
from detector.settings import ScoringSettings


@pytest.mark.slow
def test_scores_after_warm_up_are_fraud_probabilities() -> None:
    simulation = SimulationConfig(n_customers=500, n_terminals=5000, days=56, seed=1)
    start = simulation.start.date()
    weeks = [start + timedelta(days=d) for d in (35, 42, 49)]
    result = evaluate(
        simulate(simulation),
        config=ScoringSettings(calibration_half_life_labels=5000).evaluation(),
        policy=LabelPolicy(review_capacity=10),
        test_weeks=weeks,
        k=10,
    )
    calibration = result.calibration
    assert calibration is not None and calibration.transactions > 15_000
    # calibrated: over 10 equal bins, scores are off their fraud rate by 0.02 at most on
    # average, and the mean score is the fraud rate to within 40%
    assert calibration.expected_calibration_error < 0.02
    assert 0.6 * calibration.fraud_rate < calibration.mean_score < 1.4 * calibration.fraud_rate
    # few transactions score above 0.5 (fewer than there are frauds), and most of those are
    # fraud, as their scores say
    assert 0 < calibration.share_above_half < calibration.fraud_rate
    above_rate = calibration.fraud_rate_above_half
    above_mean = calibration.mean_score_above_half
    assert above_rate is not None and above_mean is not None
    assert above_rate > 0.75 and abs(above_mean - above_rate) < 0.1
    # no range of scores is far from its fraud rate where it holds enough transactions
    for b in calibration.bins:
        if b.transactions >= 200:
            assert abs(b.mean_score - b.fraud_rate) < 0.25, b
