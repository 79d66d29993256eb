"""The model step in shards: routing, learning, status and controls, in the core and the flow."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.testing import TestingSink, TestingSource, cluster_main

from detector.contracts import Control, Decision, Label, ModelStatus, ThresholdChange, Transaction
from detector.core import ScoringCore
from detector.dataflow import build_flow
from detector.flow.kafka import Sinks
from detector.flow.shards import shard_keys, where_keys_land
from detector.items import Featured, LabelToLearn, Learned, Scored
from detector.replay.simulator import SimulationConfig, simulate
from detector.settings import DetectorSettings, ScoringSettings, Settings
from detector.shards import shard_of, to_shards
from tests.unit.test_dataflow import Feed, values

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def simulated(n: int) -> list[tuple[Transaction, bool]]:
    records = itertools.islice(simulate(SimulationConfig(n_customers=80, n_terminals=120)), n)
    return [(r.transaction, bool(r.is_fraud)) for r in records]


def verdict(t: Transaction, is_fraud: bool) -> Label:
    return Label(
        transaction_id=t.transaction_id,
        card_id=t.card_id,
        label="fraud" if is_fraud else "legit",
        source="analyst",
        labeled_at=t.timestamp + timedelta(minutes=1),
    )


def test_shards_split_transactions_by_id_and_share_every_label() -> None:
    tx = Transaction(transaction_id="tx-1", timestamp=T0, card_id="c", terminal_id="t", amount=10.0)
    featured = Featured(tx, {"amount": 10.0})
    [(shard, routed)] = to_shards(featured, 4)
    assert shard == shard_of("tx-1", 4) and routed is featured
    for verdict_is_fraud in (True, False):
        copies = to_shards(LabelToLearn("tx-1", verdict_is_fraud, "analyst", {}), 4)
        assert [s for s, _ in copies] == [0, 1, 2, 3]
        homes = [s for s, c in copies if isinstance(c, LabelToLearn) and c.home]
        assert homes == [shard], "counted once, by the shard that scored it"
    control = Control(
        control_id="c1",
        action="set_deciding_model",
        model_name="m",
        requested_by="admin",
        requested_at=T0,
    )
    assert [s for s, _ in to_shards(control, 3)] == [0, 1, 2]
    shares = [shard_of(f"tx-{i}", 4) for i in range(4000)]
    assert all(800 < shares.count(s) < 1200 for s in range(4)), "ids spread evenly"


def test_a_sharded_core_learns_each_label_once_and_reports_one_status_per_model() -> None:
    core = ScoringCore(ScoringSettings(presume_legit_days=0).placed(shards=3))
    frauds = learned = 0
    for t, is_fraud in simulated(3000):
        core.score(t)
        out = core.learn(verdict(t, is_fraud))
        assert isinstance(out, Learned)
        learned += 1
        frauds += is_fraud
    assert frauds > 0
    per_shard = [s.decider.transactions_scored for s in core.shards]
    assert sum(per_shard) == 3000 and min(per_shard) > 800
    # Every shard learned every label.
    assert all(
        s.decider.scorer.labels_learned == {"fraud": frauds, "legit": learned - frauds}
        for s in core.shards
    )
    [status] = core.statuses()
    assert status.transactions_scored == 3000
    assert status.labels_learned == {"fraud": frauds, "legit": learned - frauds}
    assert status.labels_by_source == {"analyst": learned}
    assert status.quality.window == min(learned, 5000)
    assert status.quality.frauds == frauds


def test_a_control_reaches_every_shard() -> None:
    core = ScoringCore(ScoringSettings(presume_legit_days=0).placed(shards=2))
    for t, _ in simulated(200):
        core.score(t)
    change = ThresholdChange(mode="fixed", review_threshold=0.0, block_threshold=0.0)
    control = Control(
        control_id="block-all",
        action="set_thresholds",
        thresholds=change,
        requested_by="admin",
        requested_at=T0,
    )
    assert len(core.process(control)) == 1
    later = [t for t, _ in simulated(400)[200:]]
    assert {core.score(t).decision for t in later} == {"block"}
    assert {s.last_control_id for s in core.shards} == {"block-all"}


def test_shard_keys_land_on_distinct_workers() -> None:
    settings = Settings(detector=DetectorSettings(workers=3))
    keys = shard_keys(3, settings)
    assert sorted(where_keys_land(keys, 3).values()) == [0, 1, 2]
    assert shard_keys(1, Settings()) == ["model-0"]


def test_a_flow_with_two_workers_scores_on_both_and_merges_the_status() -> None:
    config = Settings(
        detector=DetectorSettings(
            workers=2, status_interval_seconds=3600.0, max_message_bytes=1024
        ),
        scoring=ScoringSettings(threshold_mode="fixed"),
    )
    assert config.detector.shards == 2
    feed = Feed()
    sent = simulated(1500)
    frauds = 0
    for t, is_fraud in sent:
        feed.transaction(t)
        if is_fraud:
            frauds += 1
            feed.raw(
                verdict(t, True).model_dump_json().encode(), topic="labels", key=t.card_id.encode()
            )
    out: dict[str, list[KafkaSinkMessage[Any, Any]]] = {
        name: [] for name in ("decisions", "alerts", "dead_letters", "model_status")
    }
    sinks = Sinks(**{name: TestingSink(messages) for name, messages in out.items()})
    flow = build_flow(config, source=TestingSource(feed.messages, batch_size=100), sinks=sinks)
    cluster_main(flow, [], 0, worker_count_per_proc=2)
    decisions = [Decision.model_validate_json(v) for v in values(out["decisions"])]
    assert sorted(d.transaction_id for d in decisions) == sorted(t.transaction_id for t, _ in sent)
    assert out["dead_letters"] == []
    final = ModelStatus.model_validate_json(values(out["model_status"])[-1])
    assert final.transactions_scored == len(sent)
    assert final.labels_learned["fraud"] == frauds
    assert final.labels_by_source["analyst"] == frauds  # each fraud counted once


def test_the_core_and_the_flow_shard_alike() -> None:
    # One worker, two shards: the same routing, learning and decisions as the core.
    config = Settings(
        detector=DetectorSettings(
            model_shards=2, status_interval_seconds=3600.0, max_message_bytes=1024
        ),
        scoring=ScoringSettings(threshold_mode="fixed"),
    )
    feed = Feed()
    events: list[Transaction | Label] = []
    for t, is_fraud in simulated(1200):
        events.append(t)
        feed.transaction(t)
        if is_fraud:
            events.append(verdict(t, True))
            feed.raw(
                verdict(t, True).model_dump_json().encode(), topic="labels", key=t.card_id.encode()
            )
    decisions: list[KafkaSinkMessage[Any, Any]] = []
    sinks = Sinks(
        decisions=TestingSink(decisions),
        alerts=TestingSink([]),
        dead_letters=TestingSink([]),
        model_status=TestingSink([]),
    )
    cluster_main(
        build_flow(config, source=TestingSource(feed.messages, batch_size=100), sinks=sinks),
        [],
        0,
        worker_count_per_proc=1,
    )
    core = ScoringCore(config.scoring.placed(shards=config.detector.shards))
    expected = {}
    for event in events:
        for item in core.process(event):
            if isinstance(item, Scored):
                d = item.to_decision()
                expected[d.transaction_id] = (d.score, d.decision, tuple(d.reasons))
    flow = {
        d.transaction_id: (d.score, d.decision, tuple(d.reasons))
        for d in (Decision.model_validate_json(v) for v in values(decisions))
    }
    assert flow == expected
