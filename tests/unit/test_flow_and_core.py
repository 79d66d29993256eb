"""The dataflow and the scoring core decide alike, in the order the records were read."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from bytewax.testing import TestingSink, TestingSource

from detector.contracts import Alert, Decision, Label, Transaction
from detector.dataflow import build_flow
from detector.flow.kafka import Sinks
from detector.settings import Settings
from tests.unit.test_dataflow import Feed, SinkMessage, run_messages, settings, tx, values


def _scored_by_core(events: list[Transaction | Label], config: Settings) -> dict[str, Decision]:
    from detector.core import ScoringCore
    from detector.items import Scored

    core = ScoringCore(config.scoring.placed(shards=config.detector.shards))
    out: dict[str, Decision] = {}
    for event in events:
        for item in core.process(event):
            if isinstance(item, Scored):
                out[item.transaction.transaction_id] = item.to_decision()
    return out


def _comparable(d: Decision) -> tuple[Any, ...]:
    return (d.score, d.decision, tuple(d.reasons), d.model_name)


def test_a_cards_transactions_reach_the_model_in_the_cards_order() -> None:
    # Regression: sent at once to a fresh detector, fifteen transactions at a card's home
    # terminal and then a 4,000 payment at a new terminal twenty hours later. The model
    # step scored the 4,000 first (it came through another terminal key in the same
    # batch), with a model that had learned nothing: 0.0, allowed.
    feed = Feed()
    events: list[Transaction | Label] = []
    for i in range(15):
        events.append(tx(f"home{i}", "card-7", "term-home", 30.0 + i, minutes=30 * i))
    # The new terminal's key sorts before the home terminal's, as it did in the report.
    events.append(tx("big", "card-7", "term-a-new", 4000.0, minutes=7 * 60 + 20 * 60))
    for event in events:
        assert isinstance(event, Transaction)
        feed.transaction(event)
    # Scores are fraud probabilities: a young card's odd payment is far from certain fraud.
    config = settings(threshold_mode="fixed", review_threshold=0.05, block_threshold=0.1)
    # Read at once, as a Kafka input reads a backlog: one batch.
    flow = {
        d.transaction_id: d for d in run_messages(feed.messages, config, batch_size=100).decisions
    }
    core = _scored_by_core(events, config)
    assert flow["big"].decision == core["big"].decision == "block"
    assert {k: _comparable(v) for k, v in flow.items()} == {
        k: _comparable(v) for k, v in core.items()
    }


def _simulated_events(n: int) -> list[Transaction | Label]:
    import itertools

    from detector.replay.simulator import SimulationConfig, simulate

    events: list[Transaction | Label] = []
    records = itertools.islice(simulate(SimulationConfig(n_customers=60, n_terminals=80)), n)
    for r in records:
        events.append(r.transaction)
        if r.is_fraud:  # an analyst's verdict right away, on its card's partition
            t = r.transaction
            events.append(
                Label(
                    transaction_id=t.transaction_id,
                    card_id=t.card_id,
                    label="fraud",
                    source="analyst",
                    labeled_at=t.timestamp + timedelta(minutes=1),
                )
            )
    return events


def _feed_of(events: list[Transaction | Label]) -> Feed:
    feed = Feed()
    for event in events:
        if isinstance(event, Transaction):
            feed.transaction(event)
        else:
            feed.raw(event.model_dump_json().encode(), topic="labels", key=event.card_id.encode())
    return feed


def test_the_flow_and_the_scoring_core_decide_alike() -> None:
    events = _simulated_events(1500)
    config = settings(threshold_mode="fixed", status_interval_seconds=3600.0)
    feed = _feed_of(events)
    flow = {
        d.transaction_id: d for d in run_messages(feed.messages, config, batch_size=200).decisions
    }
    core = _scored_by_core(events, config)
    assert len(core) == sum(isinstance(e, Transaction) for e in events)
    assert {k: _comparable(v) for k, v in flow.items()} == {
        k: _comparable(v) for k, v in core.items()
    }


def test_with_two_workers_every_transaction_gets_the_same_card_features() -> None:
    # Card state is split between the workers; a card's events stay in order, so its
    # features do not depend on how the workers interleave. (A terminal counts the
    # transactions of its current hour as they arrive, and the shared model learns from
    # every transaction in the order it reaches it: those may.)
    from bytewax.testing import cluster_main

    from detector.core import ScoringCore
    from detector.items import Scored
    from models import CARD_FEATURES

    events = _simulated_events(1500)
    config = settings(threshold_mode="fixed", review_threshold=0.0, status_interval_seconds=3600.0)
    alerts: list[SinkMessage] = []
    decisions: list[SinkMessage] = []
    sinks = Sinks(
        decisions=TestingSink(decisions),
        alerts=TestingSink(alerts),
        dead_letters=TestingSink([]),
        model_status=TestingSink([]),
    )
    feed = _feed_of(events)
    flow = build_flow(config, source=TestingSource(feed.messages, batch_size=200), sinks=sinks)
    cluster_main(flow, [], 0, worker_count_per_proc=2)
    core = ScoringCore(config.scoring.placed(shards=config.detector.shards))
    features = {}
    for event in events:
        for item in core.process(event):
            if isinstance(item, Scored):
                features[item.transaction.transaction_id] = item.features
    assert len(values(decisions)) == len(features)
    assert sorted(json.loads(v)["transaction_id"] for v in values(decisions)) == sorted(features)
    for v in values(alerts):
        alert = Alert.model_validate_json(v)
        expected = features[alert.transaction.transaction_id]
        assert {k: v for k, v in alert.features.items() if k in CARD_FEATURES} == {
            k: v for k, v in expected.items() if k in CARD_FEATURES
        }
    assert alerts, "some transactions were alerted"
