"""River's generic estimator battery, applied to fraudstream's estimators.

The parameter checks come straight from ``river.checks.common``. The data checks
(pickling, cloning, purity, emerging and vanishing features) are written here because
our estimators are not River classifiers or detectors with ``predict_one``: each has a
``Driver`` that says how it learns and what it outputs.
"""

from __future__ import annotations

import copy
import itertools
import math
import pickle
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from river import base
from river.checks import common

from models import (
    FEATURES,
    CardProfile,
    HybridScorer,
    PendingFeatures,
    ScoreCalibrator,
    TerminalProfile,
)
from models.bursts import BurstWatch
from models.drift import MeanShift
from models.surprise import TailSurprise

DAY = 86400.0
T0 = 1_700_000_000.0


def sample_features(rng: random.Random, fraud: bool = False) -> dict[str, float]:
    """Plausible feature values; frauds are large, new-terminal, bursty transactions."""
    amount = rng.lognormvariate(3.5, 0.5) * (rng.uniform(8, 30) if fraud else 1.0)
    mean = rng.lognormvariate(3.5, 0.3)
    x = {
        "amount": amount,
        "log_amount": math.log1p(amount),
        "card_tx_1h": float(rng.randint(1, 4) if fraud else rng.random() < 0.1),
        "card_tx_24h": float(rng.randint(0, 3)),
        "card_tx_7d": float(rng.randint(3, 15)),
        "card_amount_24h": amount * rng.uniform(0, 2),
        "card_history_tx": float(rng.randint(10, 60)),
        "card_mean_amount": mean,
        "card_amount_ratio": amount / mean,
        "card_hours_since_last": rng.uniform(0.1, 2) if fraud else rng.uniform(1, 48),
        "card_new_terminal": float(fraud or rng.random() < 0.1),
        "card_amount_zscore": min(20.0, (amount - mean) / (0.5 * mean)),
        "card_amount_ratio_7d": amount / mean,
        "card_frauds_14d": 0.0,
        "card_max_ratio_7d": amount / mean if fraud else rng.uniform(1.0, 2.0),
        "card_large_7d": float(rng.randint(1, 3) if fraud else rng.random() < 0.05),
        "terminal_tx_24h": float(rng.randint(0, 20)),
        "terminal_tx_7d": float(rng.randint(10, 100)),
        "terminal_frauds_7d": 0.0,
        "terminal_frauds_28d": 0.0,
        "terminal_fraud_share_28d": 0.0,
        "terminal_frauds_2d": 0.0,
        "terminal_fraud_rate_7d": 0.0,
        "terminal_fraud_rate_14d": 0.0,
        "terminal_fraud_rate_28d": 0.0,
    }
    assert tuple(x) == FEATURES
    return x


def dataset(n: int = 400, seed: int = 7) -> list[tuple[dict[str, float], bool]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        fraud = i % 25 == 24
        out.append((sample_features(rng, fraud), fraud))
    return out


DATA = dataset()
PROBES = [x for x, _ in dataset(20, seed=99)]


# --- one driver per estimator: how it learns step i, and what it outputs -------------


@dataclass(frozen=True)
class Driver:
    name: str
    make: Callable[[], base.Base]
    learn: Callable[[Any, int], None]
    probe: Callable[[Any], Any]  # must not change the model


def _card_learn(card: CardProfile, i: int) -> None:
    x, fraud = DATA[i % len(DATA)]
    late = 2 * DAY if i % 11 == 10 else 0.0  # now and then a transaction arrives late
    terminal = f"t{i % 5 if not fraud else 100 + i}"
    card.observe(T0 + i * 3000.0 - late, x["amount"], terminal, transaction_id=f"tx{i}")
    if fraud:
        card.record_label(f"tx{i}", T0 + i * 3000.0 - late, is_fraud=True)


def _card_probe(card: CardProfile) -> Any:
    features = [card.features(T0 + k * DAY, 10.0 * (k + 1), f"t{k}") for k in range(0, 30, 3)]
    return features, [card.knows(f"tx{i}") for i in range(0, 400, 7)], card.ids_held


def _terminal_learn(terminal: TerminalProfile, i: int) -> None:
    ts = T0 + i * 1800.0
    terminal.observe(ts)
    if DATA[i % len(DATA)][1]:
        terminal.record_label(f"tx{i}", ts, is_fraud=True)


def _terminal_probe(terminal: TerminalProfile) -> Any:
    return [terminal.features(T0 + k * DAY) for k in range(0, 12)], terminal.frauds_held


def _pending_learn(store: PendingFeatures, i: int) -> None:
    x, fraud = DATA[i % len(DATA)]
    store.record(f"tx{i}", T0 + i * 3600.0, x)
    if fraud:
        store.mark_labelled(f"tx{i}")
    if i % 10 == 9:
        store.expire(T0 + i * 3600.0)


def _pending_probe(store: PendingFeatures) -> Any:
    return len(store), [store.get(f"tx{i}") for i in range(0, 500, 7)]


def _hybrid_learn(model: HybridScorer, i: int) -> None:
    x, fraud = DATA[i % len(DATA)]
    model.learn_unlabelled(x, model.predict_parts(x))
    if fraud or i % 5 == 0:
        model.learn_one(x, fraud)


def _hybrid_probe(model: HybridScorer) -> Any:
    return [model.predict_parts(x) for x in PROBES], model.labels_learned


def _surprise_learn(detector: TailSurprise, i: int) -> None:
    rng = random.Random(i)
    detector.learn_one({"a": rng.random(), "b": rng.expovariate(1.0)})


def _surprise_probe(detector: TailSurprise) -> Any:
    return [detector.score_one({"a": k / 20, "b": k / 5}) for k in range(21)]


def _calibrator_learn(calibrator: ScoreCalibrator, i: int) -> None:
    score = (i * 37 % 101) / 100
    calibrator.learn_one(score, score > 0.6 and i % 3 == 0)
    if i % 50 == 49:  # now and then a verdict overturned
        calibrator.revise_one(score, True)


def _calibrator_probe(calibrator: ScoreCalibrator) -> Any:
    return (
        [calibrator.predict_one(k / 20) for k in range(21)],
        calibrator.labels_learned,
        calibrator.calibration_error(),
    )


def _burst_learn(watch: BurstWatch, i: int) -> None:
    # a few cards a day, and from step 250 a run of small amounts from new cards
    rng = random.Random(i)
    if i < 250:
        watch.observe(T0 + i * 3000.0, f"card-{rng.randint(0, 20)}", rng.uniform(10, 90))
    else:
        watch.observe(T0 + 250 * 3000.0 + (i - 250) * 5.0, f"new-{i}", rng.uniform(0.5, 2))


def _burst_probe(watch: BurstWatch) -> Any:
    return (
        watch.usual,
        watch.cards_in_window,
        watch.small_in_window,
        watch.burst("terminal_burst"),
        watch.burst("card_testing"),
        watch.top_cards(5),
        [watch.active(T0 + k * DAY) for k in range(0, 12)],
    )


def _shift_learn(watch: MeanShift, i: int) -> None:
    x, fraud = DATA[i % len(DATA)]
    late = 120.0 if i % 13 == 12 else 0.0  # now and then a value arrives late
    watch.observe(T0 + i * 20.0 - late, {"amount": x["amount"] * (4 if i > 200 else 1)})
    if i % 7 == 0:  # a value that appears now and then
        watch.observe(T0 + i * 20.0, {"fraud": float(fraud)})


def _shift_probe(watch: MeanShift) -> Any:
    return watch.reference("amount"), watch.reference("fraud")


DRIVERS = [
    Driver(
        "CardProfile",
        lambda: CardProfile(history_days=7, max_events=50, label_horizon_days=3),
        _card_learn,
        _card_probe,
    ),
    Driver(
        "TerminalProfile", lambda: TerminalProfile(history_days=3), _terminal_learn, _terminal_probe
    ),
    Driver(
        "PendingFeatures",
        lambda: PendingFeatures(FEATURES, horizon_days=10, max_entries=100, presume_legit_days=2),
        _pending_learn,
        _pending_probe,
    ),
    Driver("HybridScorer", lambda: HybridScorer(warmup_frauds=5), _hybrid_learn, _hybrid_probe),
    Driver(
        "TailSurprise",
        lambda: TailSurprise({"a": (0.0, 1.0), "b": (0.0, 5.0)}, bins=20, half_life=300),
        _surprise_learn,
        _surprise_probe,
    ),
    Driver(
        "ScoreCalibrator",
        lambda: ScoreCalibrator(base_rate=0.02, half_life=200),
        _calibrator_learn,
        _calibrator_probe,
    ),
    Driver(
        "BurstWatch",
        lambda: BurstWatch(window_seconds=300, min_cards=5, min_small=5, hold_seconds=600),
        _burst_learn,
        _burst_probe,
    ),
    Driver(
        "MeanShift",
        lambda: MeanShift(interval_seconds=60, min_count=3, half_life=100, warmup=20),
        _shift_learn,
        _shift_probe,
    ),
]
by_name = pytest.mark.parametrize("driver", DRIVERS, ids=[d.name for d in DRIVERS])


def learned(driver: Driver, steps: int = 300) -> Any:
    model = driver.make()
    for i in range(steps):
        driver.learn(model, i)
    return model


# --- River's parameter checks ----------------------------------------------------------

PARAMETER_CHECKS = [
    "check_repr",
    "check_str",
    "check_tags",
    "check_doc",
    "check_clone_same_class",
    "check_clone_is_idempotent",
    "check_clone_changes_memory_addresses",
    "check_repr_roundtrips_clone",
    "check_clone_with_new_params_applies",
    "check_get_params_matches_signature",
    "check_init_default_params_are_not_mutable",
    "check_mutate_can_be_idempotent",
    "check_pickling_supports_roundtrip",
]


@by_name
@pytest.mark.parametrize("check", PARAMETER_CHECKS)
def test_river_parameter_checks(driver: Driver, check: str) -> None:
    run = getattr(common, check, None)
    if run is None:
        pytest.skip(f"{check} is not in this River version")
    if check == "check_tags" and not isinstance(driver.make(), base.Estimator):
        pytest.skip("tags belong to estimators; this is feature state (river.base.Base)")
    run(driver.make())
    run(learned(driver, 50))


@by_name
def test_clone_keeps_params_and_forgets_learning(driver: Driver) -> None:
    model = learned(driver)
    fresh = driver.make()
    clone = model.clone()
    assert type(clone) is type(model)
    assert clone._get_params() == model._get_params()
    assert clone.clone()._get_params() == model._get_params()  # idempotent
    assert driver.probe(clone) == driver.probe(fresh)
    assert driver.probe(clone) != driver.probe(model)  # the battery really learned


@by_name
def test_clone_is_independent_of_the_original(driver: Driver) -> None:
    model = driver.make()
    clone = model.clone()
    snapshot = pickle.dumps(clone)
    for i in range(50):
        driver.learn(model, i)
    assert pickle.dumps(clone) == snapshot


@by_name
def test_pickle_round_trip_gives_identical_outputs(driver: Driver) -> None:
    model = driver.make()
    assert driver.probe(pickle.loads(pickle.dumps(model))) == driver.probe(model)
    for i in range(300):
        driver.learn(model, i)
    restored = pickle.loads(pickle.dumps(model))
    assert driver.probe(restored) == driver.probe(model)
    # ... and both keep learning in lockstep.
    for i in range(300, 360):
        driver.learn(model, i)
        driver.learn(restored, i)
    assert driver.probe(restored) == driver.probe(model)


@by_name
def test_outputs_do_not_change_the_model(driver: Driver) -> None:
    model = learned(driver)
    before = pickle.dumps(model)
    first = driver.probe(model)
    assert driver.probe(model) == first
    assert pickle.dumps(model) == before


# --- inputs are neither mutated nor aliased ---------------------------------------------


def test_hybrid_scorer_does_not_mutate_its_inputs() -> None:
    model = HybridScorer(warmup_frauds=2)
    for x, y in DATA[:300]:
        xx = copy.deepcopy(x)
        parts = model.predict_parts(x)
        model.score_one(x)
        model.learn_unlabelled(x, parts)
        model.learn_unlabelled(x)
        assert model.learn_one(x, y) is None  # type: ignore[func-returns-value]
        assert x == xx


def test_hybrid_scorer_keeps_no_reference_to_its_inputs() -> None:
    model = learned(DRIVERS[3], 300)
    x = copy.deepcopy(PROBES[0])
    model.learn_unlabelled(x)
    model.learn_one(x, True)
    before = pickle.dumps(model)
    for key in x:
        x[key] += 1e9
    x.pop("amount")
    assert pickle.dumps(model) == before


def test_pending_features_copy_their_inputs() -> None:
    store = PendingFeatures(("a", "b"))
    x = {"a": 1.0, "b": 2.0}
    store.record("tx", T0, x)
    assert x == {"a": 1.0, "b": 2.0}
    x["a"] = 99.0
    assert store.get("tx") == {"a": 1.0, "b": 2.0}
    got = store.get("tx")
    assert got is not None
    got["b"] = -1.0
    assert store.get("tx") == {"a": 1.0, "b": 2.0}


# --- emerging and vanishing features ------------------------------------------------------


def test_hybrid_scorer_copes_with_features_that_appear_and_vanish() -> None:
    rng = random.Random(3)
    model = HybridScorer(warmup_frauds=1)
    names = list(FEATURES)
    for i, (x, y) in enumerate(itertools.islice(itertools.cycle(DATA), 700)):
        keep = rng.sample(names, rng.randint(1, len(names)))
        partial = {k: x[k] for k in keep}
        if i % 50 == 0:
            partial = {}  # nothing at all
        if i % 7 == 0:
            partial["brand_new_feature"] = rng.random()
        parts = model.predict_parts(partial)
        assert 0.0 <= parts.score <= 1.0
        model.learn_unlabelled(partial, parts)
        model.learn_one(partial, y)
    full = model.predict_parts(DATA[0][0])
    assert 0.0 <= full.score <= 1.0 and full.fraud_probability is not None


def test_pending_features_cope_with_features_that_appear_and_vanish() -> None:
    store = PendingFeatures(("a", "b"))
    store.record("none", T0, {})
    store.record("extra", T0, {"a": 1.0, "b": 2.0, "c": 3.0})
    assert store.get("none") == {"a": 0.0, "b": 0.0}
    assert store.get("extra") == {"a": 1.0, "b": 2.0}


# --- what the hybrid scorer learns -------------------------------------------------------


def test_learn_one_and_learn_unlabelled_return_none() -> None:
    model = HybridScorer()
    x = DATA[0][0]
    assert model.learn_one(x, False) is None  # type: ignore[func-returns-value]
    assert model.learn_unlabelled(x) is None  # type: ignore[func-returns-value]


def test_classifier_weight_grows_with_the_scarcer_class() -> None:
    model = HybridScorer(warmup_frauds=4)
    assert model.classifier_weight() == 0.0
    assert model.predict_parts(DATA[0][0]).fraud_probability is None
    frauds_only = HybridScorer(warmup_frauds=4)
    for x in [x for x, y in DATA if y][:5]:
        frauds_only.learn_one(x, True)
    assert frauds_only.classifier_weight() == 0.0  # one class alone hands nothing over
    for x, _ in DATA[:20]:
        model.learn_one(x, False)
    assert model.classifier_weight() == 0.0  # legit labels alone hand nothing over
    weights = []
    frauds = [x for x, y in DATA if y]
    for x in frauds[:12]:
        model.learn_one(x, True)
        weights.append(model.classifier_weight())
    assert weights[0] == pytest.approx(1 / 5)
    assert weights[3] == pytest.approx(0.5)  # warmup_frauds frauds: equal weight
    assert all(a < b for a, b in itertools.pairwise(weights))
    assert weights[-1] == pytest.approx(12 / 16) and weights[-1] < 1.0
    assert model.labels_learned == {"fraud": 12, "legit": 20}
    parts = model.predict_parts(DATA[0][0])
    assert parts.classifier_weight == weights[-1] and parts.fraud_probability is not None


def test_classifier_learns_a_fraud_pattern() -> None:
    rng = random.Random(11)
    model = HybridScorer(warmup_frauds=5)
    normal = [sample_features(rng) for _ in range(400)]
    pattern = [sample_features(rng, fraud=True) for _ in range(40)]
    for x in normal:
        model.learn_unlabelled(x)
    model.learn_one(normal[0], False)
    model.learn_one(pattern[0], True)
    fresh_pattern = sample_features(rng, fraud=True)
    fresh_normal = sample_features(rng)
    p_before = model.predict_parts(fresh_pattern).fraud_probability
    score_before = model.score_one(fresh_pattern)
    for x_normal, x_fraud in zip(normal[1:], itertools.cycle(pattern[1:]), strict=False):
        model.learn_one(x_normal, False)
        if rng.random() < 0.1:
            model.learn_one(x_fraud, True)
    after = model.predict_parts(fresh_pattern)
    assert p_before is not None and after.fraud_probability is not None
    assert after.fraud_probability > p_before
    assert after.fraud_probability > 0.5
    assert after.score > score_before
    normal_after = model.predict_parts(fresh_normal)
    assert normal_after.fraud_probability is not None
    assert after.fraud_probability > normal_after.fraud_probability
    assert after.score > normal_after.score


def test_detector_scores_large_amounts_and_unusual_ratios_higher() -> None:
    model = HybridScorer()
    for x, _ in DATA[:500]:
        model.learn_unlabelled(x)
    usual = {"log_amount": 3.5, "card_amount_ratio": 1.0}
    larger = {"log_amount": 5.5, "card_amount_ratio": 1.0}
    unusual = {"log_amount": 5.5, "card_amount_ratio": 8.0}
    scores = [model.predict_parts(x).anomaly for x in (usual, larger, unusual)]
    assert scores == sorted(scores) and scores[0] < scores[2]
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_detector_does_not_learn_what_it_flags() -> None:
    model = HybridScorer(protect_above=0.5)
    for x, _ in DATA[:300]:
        model.learn_unlabelled(x)
    odd = {"log_amount": 9.0, "card_amount_ratio": 50.0}
    before = model.predict_parts(odd).anomaly
    for _ in range(200):
        model.learn_unlabelled(odd)
    assert model.predict_parts(odd).anomaly == before


def test_first_transaction_without_detector_features_does_not_crash() -> None:
    # Regression: a detector once crashed on a view without any of its features.
    model = HybridScorer()
    model.learn_unlabelled({"merchant_risk": 0.3})
    model.learn_unlabelled(DATA[0][0])
    assert model.n_scored_unlabelled == 2
    assert 0.0 <= model.score_one(DATA[1][0]) <= 1.0
