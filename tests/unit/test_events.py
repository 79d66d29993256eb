"""Detector events: a planted attack replayed through the scoring core, and the flow's
``detector_events`` output, metrics and recovered state."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.testing import TestingSink, TestingSource, run_main
from prometheus_client import generate_latest
from typer.testing import CliRunner

from detector.cli import app
from detector.contracts import DetectorEvent, Label, Transaction, event_id_for
from detector.core import ScoringCore
from detector.dataflow import build_flow
from detector.flow.kafka import Sinks
from detector.flow.outputs import Router
from detector.items import CardFeatured, Noticed, Scored
from detector.metrics import DetectorMetrics
from detector.replay.datasets import read_dataset
from detector.replay.simulator import PLANTED_ATTACK, SimulationConfig, simulate
from detector.settings import ScoringSettings
from detector.terminals import TerminalState, terminal_step
from tests.factories import settings_of
from tests.unit.test_dataflow import Feed

START = datetime(2018, 4, 1, tzinfo=UTC)
ATTACK = START + timedelta(days=2, hours=12)
TERMINAL = "term-7"


@dataclass
class Replay:
    events: list[DetectorEvent]
    scored: list[Scored]  # the attacked terminal's, from the attack on


def replay(config: ScoringSettings, *, shift: bool = True, customers: int = 8000) -> Replay:
    """Three simulated days through the scoring core; on the third, at noon, a burst of
    small amounts from 60 cards at term-7 in 5 minutes, and amounts tripled."""
    sim = SimulationConfig(
        n_customers=customers,
        n_terminals=4000,
        seed=11,
        start=START,
        days=3,
        attack_at=ATTACK,
        attack_terminal=7,
        shift_at=ATTACK if shift else None,
    )
    core = ScoringCore(config)
    events: list[DetectorEvent] = []
    scored: list[Scored] = []
    for record in simulate(sim):
        tx = record.transaction
        if tx.timestamp > ATTACK + timedelta(hours=1):
            break
        for out in core.process(tx):
            if isinstance(out, Noticed):
                events.append(out.event)
            elif isinstance(out, Scored) and tx.terminal_id == TERMINAL and tx.timestamp >= ATTACK:
                scored.append(out)
    return Replay(events, scored)


@pytest.fixture(scope="module")
def attacked() -> Replay:
    return replay(ScoringSettings(threshold_mode="volume"))


@pytest.mark.slow
def test_the_planted_burst_is_noticed_within_a_minute(attacked: Replay) -> None:
    bursts = [e for e in attacked.events if e.kind in ("terminal_burst", "card_testing")]
    assert {e.kind for e in bursts} == {"terminal_burst", "card_testing"}
    for event in bursts:
        assert event.subject == TERMINAL and event.terminals == [TERMINAL]
        assert ATTACK - timedelta(minutes=5) <= event.since <= ATTACK
        assert event.detected_at - ATTACK <= timedelta(minutes=1)
        assert event.after >= 10 and event.before is not None and event.after > event.before
        assert len(event.cards) >= 10
        assert event.event_id == event_id_for(event.kind, TERMINAL, event.since)
    burst = next(e for e in bursts if e.kind == "terminal_burst")
    assert burst.summary.startswith(f"terminal {TERMINAL}: ")
    assert " cards in 5 minutes since " in burst.summary and "usually" in burst.summary


@pytest.mark.slow
def test_the_amount_shift_is_noticed_within_a_minute(attacked: Replay) -> None:
    shifts = [
        e
        for e in attacked.events
        if e.kind in ("score_shift", "feature_shift") and e.detected_at >= ATTACK
    ]
    assert shifts, "neither the scores nor the features shifted"
    first = min(shifts, key=lambda e: e.detected_at)
    assert first.detected_at - ATTACK <= timedelta(minutes=1)
    amounts = [e for e in shifts if e.subject == "amount"]
    if amounts:
        assert amounts[0].after > 2 * (amounts[0].before or 0)


@pytest.mark.slow
def test_nothing_is_noticed_on_ordinary_traffic(attacked: Replay) -> None:
    assert [e.summary for e in attacked.events if e.detected_at < ATTACK] == []


@pytest.mark.slow
def test_the_attacked_terminal_goes_to_review_under_volume_thresholds(attacked: Replay) -> None:
    noticed = min(e.detected_at for e in attacked.events if e.kind == "terminal_burst")
    during = [s for s in attacked.scored if s.transaction.timestamp >= noticed]
    assert len(during) >= 25
    for s in during:
        assert s.decision != "allow", s.reasons
        assert any(r.startswith(f"terminal {TERMINAL}: ") for r in s.reasons)
    reason = next(r for r in during[0].reasons if r.startswith("terminal"))
    assert "reviewed while the burst lasts" in reason and "usually" in reason


@pytest.mark.slow
def test_without_the_review_window_the_burst_is_only_reported() -> None:
    config = ScoringSettings(threshold_mode="volume", burst_review_minutes=0)
    quiet = replay(config, shift=False, customers=2000)
    assert {"terminal_burst", "card_testing"} <= {e.kind for e in quiet.events}
    assert all(not r.startswith("terminal term-7") for s in quiet.scored for r in s.reasons)
    # the thresholds alone let most of the attack through: what the review window is for
    allowed = sum(s.decision == "allow" for s in quiet.scored)
    assert allowed > len(quiet.scored) / 2


@pytest.mark.slow
def test_with_shards_each_change_is_reported_once() -> None:
    sharded = replay(ScoringSettings(threshold_mode="volume").placed(shards=3), customers=3000)
    keys = [(e.kind, e.subject, e.since) for e in sharded.events]
    assert len(keys) == len(set(keys))
    assert {"terminal_burst", "card_testing"} <= {e.kind for e in sharded.events}


def _tx(i: int, at: datetime) -> Transaction:
    return Transaction(
        transaction_id=f"tx{i}", timestamp=at, card_id=f"card{i}", terminal_id=f"t{i}", amount=20
    )


def _label(i: int, fraud: bool, at: datetime) -> Label:
    return Label(
        transaction_id=f"tx{i}",
        card_id=f"card{i}",
        label="fraud" if fraud else "legit",
        source="analyst",
        labeled_at=at,
    )


def test_a_jump_in_the_share_of_frauds_among_labels_is_noticed() -> None:
    config = ScoringSettings(events_label_interval_seconds=3600.0)
    core = ScoringCore(config)
    t0 = START
    events: list[DetectorEvent] = []
    for i in range(2400):  # 100 labels an hour: 5% fraud for 20 hours, then 40%
        ts = t0 + timedelta(seconds=36 * i)
        core.process(_tx(i, ts))
        fraud = (i % 20 == 0) if i < 2000 else (i % 5 < 2)
        events += [o.event for o in core.events(_label(i, fraud, ts + timedelta(seconds=30)))]
    [event] = [e for e in events if e.kind == "fraud_rate_change"]
    assert event.subject == "fraud_rate" and event.model_name == "hybrid-tail-logreg"
    assert event.before == pytest.approx(0.05, abs=0.02) and event.after > 0.2
    assert event.since >= t0 + timedelta(seconds=36 * 2000 - 3600)
    assert "share of frauds among new labels" in event.summary


def test_a_state_recovered_from_before_bursts_starts_watching() -> None:
    config = ScoringSettings()
    t = _tx(0, START)
    state, _ = terminal_step(None, CardFeatured(t, {}), config)
    old = pickle.loads(pickle.dumps(state))
    del old.__dict__["bursts"]  # as pickled before the field existed
    assert old.bursts is None
    later = t.model_copy(update={"transaction_id": "tx1"})
    state, _ = terminal_step(old, CardFeatured(later, {}), config)
    assert isinstance(state, TerminalState) and state.bursts is not None
    assert state.bursts.cards_in_window == 1


def test_the_flow_publishes_events_keyed_by_terminal_and_counts_them() -> None:
    feed = Feed()
    for i in range(12):  # 12 cards at one terminal in 2 minutes, small amounts
        feed.transaction(
            Transaction(
                transaction_id=f"tx{i}",
                timestamp=START + timedelta(seconds=10 * i),
                card_id=f"card{i}",
                terminal_id="term-9",
                amount=1.5,
            )
        )
    captured: list[KafkaSinkMessage[bytes | None, bytes | None]] = []
    decisions: list[KafkaSinkMessage[bytes | None, bytes | None]] = []
    sinks = Sinks(
        decisions=TestingSink(decisions),
        alerts=TestingSink([]),
        dead_letters=TestingSink([]),
        model_status=TestingSink([]),
        detector_events=TestingSink(captured),
    )
    metrics = DetectorMetrics()
    flow = build_flow(
        settings_of(status_interval_seconds=1e-6, threshold_mode="volume"),
        source=TestingSource(feed.messages),
        sinks=sinks,
        metrics=metrics,
    )
    run_main(flow)
    events = [DetectorEvent.model_validate_json(m.value or b"") for m in captured]
    assert sorted(e.kind for e in events) == ["card_testing", "terminal_burst"]
    assert all(m.key == b"term-9" for m in captured)
    assert len(decisions) == 12
    exposition = generate_latest(metrics.registry).decode()
    assert 'fraudstream_detector_events_total{kind="terminal_burst"} 1.0' in exposition
    assert 'fraudstream_detector_events_total{kind="score_shift"} 0.0' in exposition
    assert "fraudstream_terminals_in_burst 1.0" in exposition


def test_router_keys_model_events_by_kind() -> None:
    at = START
    event = DetectorEvent(
        event_id=event_id_for("score_shift", "score", at),
        kind="score_shift",
        subject="score",
        summary="mean score moved",
        before=0.1,
        after=0.4,
        change=0.3,
        unit="difference",
        since=at,
        detected_at=at,
        emitted_at=at,
    )
    metrics = DetectorMetrics()
    [(sink, message)] = Router(metrics)((Noticed(event), 0.0, 0, None))
    assert sink == "detector_events" and message.key == b"score_shift"
    assert DetectorEvent.model_validate_json(message.value or b"") == event
    assert "fraudstream_terminals_in_burst 0.0" in generate_latest(metrics.registry).decode()


def test_simulate_plants_the_attack(tmp_path: Path) -> None:
    out = tmp_path / "sim.jsonl"
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--out",
            str(out),
            "--seed",
            "3",
            "--customers",
            "300",
            "--terminals",
            "200",
            "--days",
            "2",
            "--days-back",
            "2",
            "--attack-after-days",
            "1.5",
            "--attack-terminal",
            "12",
            "--attack-cards",
            "30",
        ],
    )
    assert result.exit_code == 0, result.output
    planted = [r for r in read_dataset(out) if r.scenario == PLANTED_ATTACK]
    assert len(planted) == 30 and all(r.is_fraud for r in planted)
    assert {r.transaction.terminal_id for r in planted} == {"term-12"}
    assert len({r.transaction.card_id for r in planted}) == 30
    times = [r.transaction.timestamp for r in planted]
    assert max(times) - min(times) < timedelta(minutes=5)
    assert all(r.transaction.amount <= 3.0 for r in planted)


def test_simulate_rejects_an_attack_on_a_terminal_that_does_not_exist(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            *("simulate", "--out", str(tmp_path / "x.jsonl"), "--terminals", "10"),
            *("--attack-after-days", "1", "--attack-terminal", "10"),
        ],
    )
    assert result.exit_code != 0
    assert "attack_terminal" in result.output


def test_the_simulated_shift_multiplies_amounts_from_its_time() -> None:
    base = SimulationConfig(n_customers=200, n_terminals=100, seed=2, days=2, start=START)
    shifted = SimulationConfig(
        n_customers=200,
        n_terminals=100,
        seed=2,
        days=2,
        start=START,
        shift_at=START + timedelta(days=1),
        shift_factor=3.0,
    )
    for a, b in zip(simulate(base), simulate(shifted), strict=True):
        factor = 3.0 if a.transaction.timestamp >= START + timedelta(days=1) else 1.0
        assert b.transaction.amount == pytest.approx(round(a.transaction.amount * factor, 2))


def test_a_shift_with_hours_ends_and_amounts_return() -> None:
    base = SimulationConfig(n_customers=200, n_terminals=100, seed=2, days=2, start=START)
    begins, ends = START + timedelta(hours=30), START + timedelta(hours=32, minutes=30)
    shifted = replace(base, shift_at=begins, shift_factor=2.0, shift_hours=2.5)
    multiplied = 0
    for a, b in zip(simulate(base), simulate(shifted), strict=True):
        factor = 2.0 if begins <= a.transaction.timestamp < ends else 1.0
        multiplied += factor > 1
        assert b.transaction.amount == pytest.approx(round(a.transaction.amount * factor, 2))
    assert multiplied > 0


def test_a_shift_must_last_a_while() -> None:
    with pytest.raises(ValueError, match="shift_hours"):
        SimulationConfig(shift_at=START, shift_hours=0)
