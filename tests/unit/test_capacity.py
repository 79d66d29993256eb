"""Capacity mode: about ``REVIEW_CAPACITY_PER_HOUR`` alerts an hour, whatever the traffic,
without a cold-start flood and without cold-start blindness."""

from __future__ import annotations

import itertools
import pickle
import random
from datetime import UTC, datetime, timedelta

import pytest

from detector.contracts import Control, ThresholdChange, Transaction
from detector.core import ScoringCore
from detector.decision import (
    GLARING_ANOMALY,
    HOUR,
    MAX_REVIEW_SHARE,
    CapacityThresholds,
    Thresholds,
    VolumeThresholds,
)
from detector.items import ControlApplied, Scored
from detector.replay.simulator import SimulationConfig, simulate
from detector.settings import ScoringSettings

START = datetime(2026, 11, 2, 8, tzinfo=UTC)
# `fraudstream up` publishes a simulated transaction a second (detector.local.up)
MAKE_RUN_RATE = 1.0


def feed(
    t: CapacityThresholds, per_second: float, hours: float, start: float = 0.0
) -> list[tuple[float, str]]:
    """Random scores at ``per_second`` for ``hours`` of event time: (time, decision)."""
    rng = random.Random(7)
    out = []
    for i in range(int(per_second * hours * HOUR)):
        at = start + i / per_second
        score = rng.random() ** 3
        out.append((at, t.decide_transaction(score, at=at, anomaly=score / 2)))
        t.window.update(score)
    return out


def alerts_between(decisions: list[tuple[float, str]], start: float, end: float) -> int:
    return sum(1 for at, d in decisions if start <= at < end and d != "allow")


def most_in_any_hour(decisions: list[tuple[float, str]]) -> int:
    """The most alerts in a sliding hour of event time."""
    times = [at for at, d in decisions if d != "allow"]
    most, first = 0, 0
    for last, at in enumerate(times):
        while times[first] <= at - HOUR:
            first += 1
        most = max(most, last - first + 1)
    return most


@pytest.mark.parametrize("per_second", [2.0, 20.0])
def test_the_alert_volume_is_the_capacity_whatever_the_traffic(per_second: float) -> None:
    t = CapacityThresholds(VolumeThresholds(), per_hour=60)
    decisions = feed(t, per_second, hours=3)
    assert most_in_any_hour(decisions) <= 60
    # once the traffic estimate is an hour old, the hours are near the capacity
    for hour in (1, 2):
        assert 45 <= alerts_between(decisions, hour * HOUR, (hour + 1) * HOUR) <= 60
    assert t.review_share == pytest.approx(60 / (per_second * HOUR), rel=0.05)


def test_a_quiet_hour_alerts_at_most_the_largest_share() -> None:
    t = CapacityThresholds(VolumeThresholds(), per_hour=60)
    decisions = feed(t, per_second=0.1, hours=4)  # 360 an hour: 60 would be a sixth
    assert t.review_share == MAX_REVIEW_SHARE
    assert alerts_between(decisions, 2 * HOUR, 4 * HOUR) <= MAX_REVIEW_SHARE * 720 + 2


def test_the_pacing_guard_holds_a_cold_start_back() -> None:
    # Every score above the fallback review threshold, from the first transaction on:
    # the young thresholds would alert everything; the guard lets through at most
    # MAX_REVIEW_SHARE of the traffic and a quarter of an hour's capacity at once.
    window = VolumeThresholds()
    t = CapacityThresholds(window, per_hour=60, fallback=Thresholds(0.1, 0.9))
    decisions = []
    for i in range(600):  # ten a second for a minute: the share binds
        decisions.append(t.decide_transaction(0.5, at=i / 10, anomaly=0.5))
        window.update(0.5)
    assert sum(d != "allow" for d in decisions) == MAX_REVIEW_SHARE * 600 == 9
    for i in range(6000):  # then a hundred a second for a minute: the burst binds
        decisions.append(t.decide_transaction(0.5, at=60 + i / 100, anomaly=0.5))
        window.update(0.5)
    # the burst, and the minute's pace each minute since the start
    assert sum(d != "allow" for d in decisions) == t.alerts_last_hour
    assert t.burst == 15 <= t.alerts_last_hour <= t.burst + 2


def test_a_glaring_anomaly_passes_the_pacing_guard() -> None:
    window = VolumeThresholds()
    t = CapacityThresholds(window, per_hour=60, fallback=Thresholds(0.1, 0.9))
    for i in range(6000):
        t.decide_transaction(0.5, at=i / 100, anomaly=0.5)
        window.update(0.5)
    spent = t.alerts_last_hour
    assert t.decide_transaction(0.5, at=59.99, anomaly=0.5) == "allow", "the guard holds"
    assert t.decide_transaction(0.5, at=59.99, anomaly=GLARING_ANOMALY) == "review"
    assert t.alerts_last_hour == spent + 1


def test_a_block_threshold_of_one_never_blocks() -> None:
    assert Thresholds(0.5, 1.0).decide(1.0) == "review"
    assert Thresholds(1.0, 1.0).decide(1.0) == "allow"
    assert Thresholds(0.5, 0.9).decide(1.0) == "block"
    window = VolumeThresholds()
    t = CapacityThresholds(window, per_hour=60, block=1.0)
    assert {d for _, d in feed(t, per_second=2.0, hours=2)} == {"allow", "review"}


def test_a_block_threshold_of_one_never_blocks_in_the_core() -> None:
    core = ScoringCore(ScoringSettings(presume_legit_days=0))
    [applied] = core.process(
        Control(
            control_id="c-1",
            action="set_thresholds",
            thresholds=ThresholdChange(mode="fixed", review_threshold=0.0, block_threshold=1.0),
            requested_by="admin",
            requested_at=START,
        )
    )
    assert isinstance(applied, ControlApplied)
    scored = [
        core.score(tx(f"t{i}", "card-1", START + timedelta(minutes=i), 10.0 * 3**i))
        for i in range(8)
    ]
    # raw scores near the top: blocked under any threshold below 1.0
    assert max(s.parts.raw_score for s in scored) >= 0.8
    assert {s.decision for s in scored} == {"review"}


def test_blocks_are_the_top_of_the_alerts() -> None:
    t = CapacityThresholds(VolumeThresholds(), per_hour=600, block=0.0)
    decisions = feed(t, per_second=2.0, hours=3)
    alerted = [d for at, d in decisions if at >= HOUR and d != "allow"]
    assert 0 < alerted.count("block") <= 0.2 * len(alerted)


def test_a_new_capacity_keeps_the_hour_counted() -> None:
    window = VolumeThresholds()
    slot_thresholds = CapacityThresholds(window, per_hour=60)
    feed(slot_thresholds, per_second=2.0, hours=1.5)
    before = slot_thresholds.alerts_last_hour
    slot_thresholds.set_capacity(30, 0.9)
    assert slot_thresholds.alerts_last_hour == before
    later = feed(slot_thresholds, per_second=2.0, hours=2, start=1.5 * HOUR)
    assert alerts_between(later, 2.5 * HOUR, 3.5 * HOUR) <= 30


def test_capacity_thresholds_pickle_compactly() -> None:
    window = VolumeThresholds()
    t = CapacityThresholds(window, per_hour=60)
    feed(t, per_second=10.0, hours=1.5)
    # the window of scores is the slot's, kept in every mode: what capacity mode adds
    # is its traffic and alert counts
    added = len(pickle.dumps((t, window))) - len(pickle.dumps(window))
    assert added < 4000, added
    again = pickle.loads(pickle.dumps(t))
    assert again.decide_transaction(0.99, at=1.5 * HOUR, anomaly=0.0) == t.decide_transaction(
        0.99, at=1.5 * HOUR, anomaly=0.0
    )


def test_thresholds_pickled_before_the_running_count_decide_alike() -> None:
    window = VolumeThresholds()
    t = CapacityThresholds(window, per_hour=60)
    feed(t, per_second=2.0, hours=1.5)
    old = pickle.loads(pickle.dumps((t, window)))[0]
    del old.__dict__["_in_hour"]  # as a snapshot of the version before it holds them
    assert old.transactions_per_hour == t.transactions_per_hour == 2.0 * HOUR
    later_t = feed(t, per_second=2.0, hours=1, start=1.5 * HOUR)
    later_old = feed(old, per_second=2.0, hours=1, start=1.5 * HOUR)
    assert later_old == later_t
    assert old.transactions_per_hour == t.transactions_per_hour


def tx(tx_id: str, card: str, at: datetime, amount: float, terminal: str = "term-1") -> Transaction:
    return Transaction(
        transaction_id=tx_id, timestamp=at, card_id=card, terminal_id=terminal, amount=amount
    )


def test_a_glaring_anomaly_is_reviewed_on_a_fresh_system() -> None:
    core = ScoringCore(ScoringSettings(presume_legit_days=0))
    assert core.config.threshold_mode == "capacity"
    amounts = [35.0, 40.0, 38.5, 36.0]
    for i, amount in enumerate(amounts):
        core.score(tx(f"t{i}", "card-1", START + timedelta(hours=i), amount))
    big = 108 * sum(amounts) / len(amounts)  # about 4,000
    scored = core.score(tx("big", "card-1", START + timedelta(hours=6), big))
    assert scored.features["card_amount_ratio"] > 100
    assert scored.decision in ("review", "block"), scored.parts
    assert any("x this card's 30-day average" in r for r in scored.reasons)


def test_a_huge_first_payment_is_not_scored_zero_on_a_fresh_system() -> None:
    # The detector's prior: before any observation, the top of the amounts' range is rare.
    core = ScoringCore(ScoringSettings(presume_legit_days=0))
    huge = core.score(tx("first", "card-1", START, 4000.0))
    assert huge.parts.anomaly > 0.6 and huge.score > 0.0
    ordinary = core.score(tx("second", "card-2", START + timedelta(minutes=1), 35.0))
    assert ordinary.decision == "allow" and ordinary.parts.anomaly < huge.parts.anomaly


def test_a_glaring_anomaly_is_reviewed_when_the_hour_is_spent() -> None:
    core = ScoringCore(ScoringSettings(presume_legit_days=0, review_capacity_per_hour=5))
    records = simulate(SimulationConfig(n_customers=500, n_terminals=1000, seed=3))
    last = START
    for record in itertools.islice(records, 3000):
        last = record.transaction.timestamp
        core.score(record.transaction)
    thresholds = core.model.decider.thresholds
    assert isinstance(thresholds, CapacityThresholds)
    at = last + timedelta(minutes=1)
    for i in range(3):
        core.score(tx(f"o{i}", "card-x", at + timedelta(seconds=i), 40.0 + i, "term-9"))
    # large payments of new cards spend what the guard lets through
    spent = [
        core.score(tx(f"s{i}", f"card-s{i}", at + timedelta(seconds=5), 1500.0 + 50 * i, "term-8"))
        for i in range(30)
    ]
    assert thresholds.holding, "the guard holds alerts back"
    assert any(s.decision == "allow" and s.parts.score >= thresholds.review for s in spent)
    scored = core.score(tx("big", "card-x", at + timedelta(seconds=10), 4400.0, "term-9"))
    assert scored.parts.anomaly >= GLARING_ANOMALY
    assert scored.decision in ("review", "block"), scored.parts


def scored_sim(n: int, seed: int, config: ScoringSettings) -> list[Scored]:
    core = ScoringCore(config)
    out = []
    for record in itertools.islice(simulate(SimulationConfig(seed=seed)), n):
        out.extend(o for o in core.process(record.transaction) if isinstance(o, Scored))
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_no_cold_start_flood_at_the_make_run_rate(seed: int) -> None:
    # A new deployment under `make run`: the first ten minutes and the first hour of
    # the simulator's transactions, every card new at first.
    ten_minutes = int(MAKE_RUN_RATE * 600)
    scored = scored_sim(int(MAKE_RUN_RATE * 3600), seed, ScoringSettings(presume_legit_days=0))
    alerts = [s for s in scored if s.decision != "allow"]
    first = [s for s in scored[:ten_minutes] if s.decision != "allow"]
    # the capacity's share: 60 an hour, 10 in ten minutes; the young guard lets a few
    # more through while the traffic is quiet (MIN_ALERTS_PER_HOUR)
    assert len(first) <= 15, [s.reasons for s in first]
    assert len(alerts) <= 60
    assert alerts, "a cold start is not blind"
    # no alert whose only (or first) reason is a new card
    assert all(s.reasons and s.reasons[0] != "first transaction seen for this card" for s in alerts)


def test_shards_together_keep_the_capacity() -> None:
    config = ScoringSettings(presume_legit_days=0, review_capacity_per_hour=40).placed(shards=2)
    core = ScoringCore(config)
    times = []
    for record in itertools.islice(simulate(SimulationConfig(seed=5)), 40_000):
        for o in core.process(record.transaction):
            if isinstance(o, Scored) and o.decision != "allow":
                times.append(o.transaction.epoch_seconds)
    for shard in core.shards:
        thresholds = shard.decider.thresholds
        assert isinstance(thresholds, CapacityThresholds) and thresholds.budget == 20
    decisions = [(at, "review") for at in times]
    assert most_in_any_hour(decisions) <= 40
    [status] = core.statuses()
    assert (status.threshold_mode, status.review_capacity_per_hour) == ("capacity", 40)
    assert status.alerts_last_hour is not None and status.alerts_last_hour <= 40


def test_the_local_system_runs_the_simulator_at_its_documented_pace() -> None:
    import inspect

    from detector.local import commands, up

    assert up.SIMULATOR_RATE == MAKE_RUN_RATE
    assert inspect.signature(commands.up).parameters["rate"].default == up.SIMULATOR_RATE
    assert inspect.signature(up.run_system).parameters["rate"].default == up.SIMULATOR_RATE


def test_what_made_the_score_is_a_reason() -> None:
    from detector.reasons import explain
    from models import HybridScore

    def reasons(features: dict[str, float], anomaly: float) -> list[str]:
        parts = HybridScore(anomaly, anomaly, None, 0.0)
        return explain(features, parts, terminal_id="term-7", history_days=30, frauds_learned=0)

    known = {"amount": 180.0, "card_history_tx": 5.0, "card_amount_ratio": 1.5}
    at_new_terminal = reasons(known | {"card_new_terminal": 1.0}, 0.87)
    assert at_new_terminal == [
        "first use of terminal term-7 by this card in 30 days",
        "amount 180.00 rarer than 87.0% of past transactions",
    ]
    first = {"amount": 180.0, "card_history_tx": 0.0, "card_amount_ratio": 1.0}
    assert reasons(first, 0.7) == [
        "amount 180.00 rarer than 70.0% of past transactions",
        "first transaction seen for this card",
    ]
    assert reasons(first, 0.3) == ["first transaction seen for this card"]
    # beyond three times the card's average, the average says it
    high = known | {"card_amount_ratio": 4.0, "card_mean_amount": 45.0}
    assert reasons(high, 0.87) == ["amount 4.0x this card's 30-day average (45.00)"]
