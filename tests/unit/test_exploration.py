"""The exploration sample, label origins, and the quality figures kept per origin."""

from __future__ import annotations

import itertools
import pickle
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from detector.contracts import Alert, Decision, Label, Transaction
from detector.core import ScoringCore
from detector.exploration import ExplorationSampler, sample_point
from detector.items import Scored
from detector.replay.simulator import SimulationConfig, simulate
from detector.scoring import ensure_models
from detector.settings import ScoringSettings
from detector.status import quality_of
from models.quality import LabelledOutcome, QualityMinimum, QualityTracker, traffic_estimate

START = datetime(2024, 3, 4, tzinfo=UTC)
HOUR = 3600.0


def never_alerting(share: float) -> ScoringSettings:
    """Fixed thresholds that never alert (every transaction is allowed), and a sample of
    ``share`` of what they allow, with no hourly cap to speak of."""
    return ScoringSettings(
        threshold_mode="fixed",
        review_threshold=1.0,
        block_threshold=1.0,
        exploration_share=share,
        exploration_max_per_hour=1000,
    )


def ids(n: int, prefix: str = "tx") -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


# --- the sampler ------------------------------------------------------------------------


def test_the_share_chosen_is_the_share_asked() -> None:
    sampler = ExplorationSampler(share=0.002, max_per_hour=1_000_000)
    chosen = sum(sampler.choose(tx_id, at=0.0) for tx_id in ids(200_000))
    # 400 expected; a binomial's standard deviation is 20
    assert 320 <= chosen <= 480
    assert (sampler.seen, sampler.chosen) == (200_000, chosen)


def test_the_choice_is_the_same_for_the_same_ids_whatever_the_order() -> None:
    first, second = (ExplorationSampler(0.05, 1_000_000) for _ in range(2))
    names = ids(5000)
    a = {t for t in names if first.choose(t, at=0.0)}
    b = {t for t in reversed(names) if second.choose(t, at=0.0)}
    assert a == b == {t for t in names if sample_point(t) < 0.05}
    assert a  # not an empty agreement


def test_the_hourly_cap_bounds_each_hour_and_a_new_hour_starts_again() -> None:
    sampler = ExplorationSampler(share=0.5, max_per_hour=5)
    per_hour = [
        sum(sampler.choose(t, at=hour * HOUR + 1) for t in ids(200, f"h{hour}"))
        for hour in range(3)
    ]
    assert per_hour == [5, 5, 5]
    # a late transaction counts in its own hour: full, for the first hour
    late = [t for t in ids(1000, "late") if sample_point(t) < 0.5]
    assert not sampler.choose(late[0], at=0.0)
    # an hour not full yet, however late it comes, chooses by the hash alone
    assert [sampler.choose(t, at=10 * HOUR) for t in late[:3]] == [True] * 3
    assert sampler.choose(late[3], at=5 * HOUR)


def test_shards_share_the_hourly_cap() -> None:
    sampler = ExplorationSampler(share=0.5, max_per_hour=6, shards=3)
    assert sum(sampler.choose(t, at=0.0) for t in ids(500)) == 2


def test_share_zero_chooses_none() -> None:
    sampler = ExplorationSampler(share=0.0, max_per_hour=100)
    assert not any(sampler.choose(t, at=0.0) for t in ids(1000))


# --- the model step ---------------------------------------------------------------------


def tx(i: int, amount: float = 30.0) -> Transaction:
    return Transaction(
        transaction_id=f"t-{i}",
        timestamp=START + timedelta(seconds=10 * i),
        card_id=f"card-{i % 50}",
        terminal_id=f"term-{i % 20}",
        amount=amount,
    )


def run(core: ScoringCore, n: int) -> list[Scored]:
    return [o for i in range(n) for o in core.process(tx(i)) if isinstance(o, Scored)]


def test_allowed_transactions_of_the_sample_become_review_alerts_and_stay_allowed() -> None:
    scored = run(ScoringCore(never_alerting(0.1)), 500)
    explored = [s for s in scored if s.exploration]
    assert {s.transaction.transaction_id for s in explored} == {
        s.transaction.transaction_id
        for s in scored
        if sample_point(s.transaction.transaction_id) < 0.1
    }
    assert 20 <= len(explored) <= 90
    for s in explored:
        decision = s.to_decision()
        assert (decision.decision, decision.exploration) == ("allow", True)
        alert = s.to_alert()
        assert alert is not None
        assert (alert.decision, alert.exploration) == ("review", True)
        # the published records carry the mark, and read back with it
        assert Alert.model_validate_json(alert.model_dump_json()).exploration
        assert s.of_record(decision.model_dump_json().encode()).exploration
    assert all(s.to_alert() is None for s in scored if not s.exploration)


def test_alerted_transactions_are_never_in_the_sample() -> None:
    config = ScoringSettings(
        threshold_mode="fixed",
        review_threshold=0.0,
        block_threshold=1.0,
        exploration_share=0.5,
        exploration_max_per_hour=1000,
    )
    core = ScoringCore(config)
    scored = run(core, 300)
    assert all(s.decision == "review" for s in scored)
    assert not any(s.exploration for s in scored)
    assert all(not s.to_alert().exploration for s in scored)  # type: ignore[union-attr]
    assert core.model.exploration.seen == 0


def test_a_replay_chooses_the_same_transactions() -> None:
    config = ScoringSettings(exploration_share=0.05, exploration_max_per_hour=1000)
    runs = [
        {s.transaction.transaction_id for s in run(ScoringCore(config), 400) if s.exploration}
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    assert runs[0]


def test_a_state_from_before_the_sample_gets_one_and_pickles() -> None:
    config = ScoringSettings(exploration_share=0.05, exploration_max_per_hour=7)
    core = ScoringCore(config)
    run(core, 50)
    del core.model.__dict__["exploration"]  # as unpickled from an older snapshot
    state = ensure_models(pickle.loads(pickle.dumps(core.model)), config)
    assert (state.exploration.share, state.exploration.max_per_hour) == (0.05, 7)
    core.model = state
    assert any(
        o.exploration for i in range(50, 400) for o in core.process(tx(i)) if isinstance(o, Scored)
    )
    again = pickle.loads(pickle.dumps(core.model))
    assert again.exploration.chosen == core.model.exploration.chosen > 0


# --- label origins ----------------------------------------------------------------------


def label_json(**fields: object) -> str:
    base = {
        "transaction_id": "tx-1",
        "card_id": "card-1",
        "label": "fraud",
        "source": "analyst",
        "labeled_at": "2024-03-04T09:00:00Z",
    }
    return Label.model_validate(base | fields, strict=False).model_dump_json()


@pytest.mark.parametrize(
    ("source", "origin"),
    [("analyst", "alerted"), ("chargeback", "chargeback"), ("bank-x", "alerted")],
)
def test_a_label_without_origin_gets_the_one_its_source_implies(source: str, origin: str) -> None:
    raw = (
        '{"transaction_id":"t","card_id":"c","label":"legit",'
        f'"source":"{source}","labeled_at":"2024-03-04T09:00:00Z"}}'
    )
    label = Label.model_validate_json(raw)
    assert label.origin == label.provenance == origin
    with_null = Label.model_validate_json(raw[:-1] + ',"origin":null}')
    assert with_null.origin == origin


def test_an_explicit_origin_is_kept_and_an_unknown_one_refused() -> None:
    for origin in ("alerted", "exploration", "chargeback", "reported"):
        assert Label.model_validate_json(label_json(origin=origin)).origin == origin
    with pytest.raises(ValidationError, match="origin"):
        Label.model_validate_json(label_json(origin="guess"))


def test_a_label_pickled_before_origins_still_says_one() -> None:
    label = Label.model_validate_json(label_json(source="chargeback"))
    del label.__dict__["origin"]
    assert pickle.loads(pickle.dumps(label)).provenance == "chargeback"


def test_decisions_and_alerts_default_to_not_exploration() -> None:
    decision = Decision.model_json_schema()["properties"]["exploration"]
    alert = Alert.model_json_schema()["properties"]["exploration"]
    assert decision["default"] is False and alert["default"] is False


# --- quality per origin -----------------------------------------------------------------


def outcomes(
    n: int, frauds: int, origin: str, *, alerted: bool, score: float
) -> list[LabelledOutcome]:
    return [LabelledOutcome(score, alerted, i < frauds, "analyst", origin) for i in range(n)]


def test_the_whole_traffic_estimates_weigh_the_exploration_sample() -> None:
    # 100 alerts at precision 0.4; 200 exploration labels, 2 frauds: 1% of the allowed
    window = outcomes(100, 40, "alerted", alerted=True, score=0.8)
    window += outcomes(200, 2, "exploration", alerted=False, score=0.1)
    minimum = QualityMinimum(1, 1, 1, 100)
    quality = quality_of(
        window, minimum, decisions={"allow": 9800, "review": 200}, exploration=(9800, 20)
    )
    assert quality.by_origin["alerted"].alert_precision == 0.4
    assert (quality.by_origin["exploration"].labels, quality.by_origin["exploration"].frauds) == (
        200,
        2,
    )
    assert quality.exploration_share == pytest.approx(20 / 9800)
    assert quality.allowed_fraud_rate == pytest.approx(0.01)
    # alerted frauds 0.02 x 0.4 = 0.008 a transaction, allowed 0.98 x 0.01 = 0.0098
    assert quality.estimated_recall == pytest.approx(0.008 / (0.008 + 0.0098))
    # the biased figure, from alerted labels alone, knows of no missed fraud at all
    assert quality.alert_recall == pytest.approx(40 / 42)


def test_the_estimates_are_null_below_the_minimum_and_for_a_challenger() -> None:
    window = outcomes(100, 40, "alerted", alerted=True, score=0.8)
    window += outcomes(99, 2, "exploration", alerted=False, score=0.1)
    decisions = {"allow": 9800, "review": 200}
    low = quality_of(window, QualityMinimum(1, 1, 1, 100), decisions=decisions, exploration=(1, 1))
    assert (low.allowed_fraud_rate, low.estimated_recall, low.min_exploration) == (None, None, 100)
    challenger = quality_of(window, QualityMinimum(1, 1, 1, 10), decisions=decisions)
    assert (challenger.allowed_fraud_rate, challenger.estimated_recall) == (None, None)
    assert traffic_estimate(window, alerted_share=None, alert_precision=None).recall is None


def test_verdicts_on_the_sample_reach_the_model_status_as_exploration() -> None:
    config = ScoringSettings(
        exploration_share=0.05,
        exploration_max_per_hour=1000,
        quality_min_exploration=5,
        presume_legit_days=0.0,
    )
    core = ScoringCore(config)
    records = list(
        itertools.islice(simulate(SimulationConfig(n_customers=200, n_terminals=300, seed=3)), 4000)
    )
    explored: list[Scored] = []
    for record in records:
        explored += [
            o for o in core.process(record.transaction) if isinstance(o, Scored) and o.exploration
        ]
    assert len(explored) >= 5
    for i, s in enumerate(explored):
        t = s.transaction
        core.process(
            Label(
                transaction_id=t.transaction_id,
                card_id=t.card_id,
                label="fraud" if i == 0 else "legit",
                source="analyst",
                labeled_at=datetime.now(UTC),
                origin="exploration",
            )
        )
    [status, *_] = core.statuses()
    sample = status.quality.by_origin["exploration"]
    assert (sample.labels, sample.frauds, sample.alerts) == (len(explored), 1, 0)
    assert status.quality.allowed_fraud_rate == pytest.approx(1 / len(explored))
    assert status.quality.exploration_share is not None


def test_a_quality_window_pickled_before_origins_counts_its_labels_as_unknown() -> None:
    tracker = QualityTracker(window=10, minimum=QualityMinimum(0, 0, 0, 0))
    tracker.record("old", 0.0, 0.9, True)
    tracker.learn("old", True, "analyst", origin="alerted")
    # as a snapshot written before labels had an origin holds it: (score, alerted, fraud, source)
    tracker._window["old"] = tracker._window["old"][:4]  # type: ignore[assignment]
    restored = pickle.loads(pickle.dumps(tracker))
    restored.record("new", 1.0, 0.1, False)
    restored.learn("new", False, "analyst", origin="exploration")
    quality = quality_of(restored.window(), restored.minimum)
    assert {name: q.labels for name, q in quality.by_origin.items()} == {
        "unknown": 1,
        "exploration": 1,
    }
