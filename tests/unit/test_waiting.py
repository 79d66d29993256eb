"""Features waiting for labels on disk: the store, its crash consistency, and the flow on it."""

from __future__ import annotations

import pickle
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

from detector.contracts import Decision, Label, ModelStatus, Transaction
from detector.core import ScoringCore
from detector.dataflow import build_flow
from detector.flow.kafka import Sinks
from detector.metrics import DetectorMetrics
from detector.settings import ScoringSettings
from detector.waiting import StoredPending, StoredScores, StoreFormatError, WaitingStore
from models import PendingFeatures, QualityTracker
from tests.unit.test_dataflow import Feed, SinkMessage, settings, tx, values
from tests.unit.test_flow_and_core import _comparable, _feed_of, _scored_by_core, _simulated_events

DAY = 86400.0
NAMES = ("a", "b")


def stored(path: Path, terminal: str = "t1", presume: float = 1.0) -> StoredPending:
    return StoredPending(terminal, NAMES, path, 8, horizon_days=10.0, presume_legit_days=presume)


def test_the_stored_twin_behaves_as_the_one_in_memory(tmp_path: Path) -> None:
    disk = stored(tmp_path / "w.sqlite3")
    ram = PendingFeatures(NAMES, horizon_days=10.0, presume_legit_days=1.0)
    for store in (disk, ram):
        for i in range(20):
            store.record(f"tx{i}", i * 0.25 * DAY, {"a": float(i), "b": -float(i)})
        store.mark_labelled("tx3")
    assert disk.get("tx7") == ram.get("tx7") == {"a": 7.0, "b": -7.0}
    assert disk.get("nope") is ram.get("nope") is None
    for now in (0.5 * DAY, 2 * DAY, 2 * DAY, 6 * DAY):
        assert disk.expire(now) == ram.expire(now)
    # Beyond the horizon, nothing is found.
    disk.record("late", 30 * DAY, {"a": 1.0})
    assert disk.get("tx0") is None


def test_the_state_pickles_small_and_without_the_store(tmp_path: Path) -> None:
    pending = stored(tmp_path / "w.sqlite3")
    for i in range(5000):
        pending.record(f"tx{i}", float(i), {"a": 1.0, "b": 2.0})
    assert len(pickle.dumps(pending)) < 600, "the vectors are in the store, not the state"
    again: StoredPending = pickle.loads(pickle.dumps(pending))
    assert again.get("tx42") == {"a": 1.0, "b": 2.0}


def test_a_resumed_terminal_neither_loses_a_vector_nor_learns_a_label_twice(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.sqlite3"
    pending = stored(path)
    for i in range(10):
        pending.record(f"tx{i}", i * 3600.0, {"a": float(i), "b": 0.0})
    pending.store.commit()
    snapshot = pickle.dumps(pending)  # the last snapshot before the crash
    # After it: more transactions, a label, and a presumption that the crash loses.
    for i in range(10, 20):
        pending.record(f"tx{i}", i * 3600.0, {"a": float(i), "b": 0.0})
    pending.mark_labelled("tx2")
    first = pending.expire(2 * DAY)
    assert [tx for tx, _ in first] == [f"tx{i}" for i in range(20) if i != 2]
    pending.store.close()  # the process dies; the uncommitted rows may be gone

    resumed: StoredPending = pickle.loads(snapshot)
    resumed.__dict__["_store"] = WaitingStore(path, 8)  # the next process's store
    for i in range(10, 20):  # the transactions after the snapshot are read again
        resumed.record(f"tx{i}", i * 3600.0, {"a": float(i), "b": 0.0})
    resumed.mark_labelled("tx2")  # and so is the label
    again = resumed.expire(2 * DAY)
    assert again == first, "what the restored models never learned is presumed again"
    assert resumed.expire(3 * DAY) == [], "and only once"
    assert resumed.get("tx15") == {"a": 15.0, "b": 0.0}


def test_rows_past_the_horizon_are_purged(tmp_path: Path) -> None:
    store = WaitingStore(tmp_path / "w.sqlite3", 8)
    for i in range(100):
        store.put("t", f"tx{i}", float(i), b"x")
    store.commit()
    assert store.rows == 100
    assert store.purge_before(40.0) == 40
    assert store.rows == 60 and store.get("t", "tx39") is None


def test_purging_whole_days_keeps_the_rest_findable(tmp_path: Path) -> None:
    store = WaitingStore(tmp_path / "w.sqlite3", 8)
    for i in range(40):  # ten days, four transactions a day, two terminals
        store.put(f"t{i % 2}", f"tx{i}", i * DAY / 4, bytes([i]))
    store.commit()
    assert store.purge_before(5.5 * DAY) == 22
    assert store.get("t0", "tx20") is None and store.get("t1", "tx21") is None
    assert store.get("t0", "tx22") == (5.5 * DAY, bytes([22]))
    # A terminal's rows over several days, oldest first.
    assert [tx for tx, _ in store.between("t1", 6 * DAY, 8 * DAY)] == [
        "tx25",
        "tx27",
        "tx29",
        "tx31",
    ]
    assert [tx for tx, _ in store.between("t0", float("-inf"), 6 * DAY)] == ["tx22", "tx24"]


def test_a_span_of_years_is_read_at_once_not_day_by_day(tmp_path: Path) -> None:
    store = WaitingStore(tmp_path / "w.sqlite3", 8)
    ancient, recent = -60_000_000_000.0, 1_700_000_000.0  # years 68 and 2023
    store.put("t", "old", ancient, b"o")
    store.put("t", "new", recent, b"n")
    store.put("u", "other", recent, b"x")
    assert store.between("t", float("-inf"), recent) == [("old", b"o"), ("new", b"n")]
    assert store.between("t", ancient, recent) == [("new", b"n")]


def test_a_store_of_another_format_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "w.sqlite3"
    WaitingStore(path, 8).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=1")
    with pytest.raises(StoreFormatError, match=r"format 1, this version reads format \d+"):
        WaitingStore(path, 8)


def test_decision_time_scores_wait_on_disk_and_outlive_a_replayed_label(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    tracker = QualityTracker(window=10, scores=StoredScores("m", path, 8))
    for i in range(3000):
        tracker.record(f"tx{i}", float(i), i / 3000, i % 2 == 0)
    assert len(pickle.dumps(tracker)) < 600, "the scores are in the store, not the state"
    assert tracker.pending == 3000
    resumed: QualityTracker = pickle.loads(pickle.dumps(tracker))
    assert resumed.learn("tx10", True) and resumed.learn("tx10", True)
    assert [tuple(o)[:3] for o in resumed.window()] == [(10 / 3000, True, True)]
    assert not resumed.learn("never-scored", False)
    # Another model's scores are its own; the first score of a transaction stays.
    other = StoredScores("other", path, 8)
    other.put("tx10", 10.0, 0.99, False)
    other.put("tx10", 10.0, 0.11, True)
    assert other.take("tx10") == (0.99, False) and len(other) == 1
    store = other.store  # the process's one store of that file
    store.purge_before(2000.0)
    assert store.scores == {"m": 1000}
    assert store.get_score("m", "tx1999") is None and store.get_score("m", "tx2000")


def test_the_model_state_keeps_no_waiting_score_in_memory(tmp_path: Path) -> None:
    def quality_bytes(config: ScoringSettings) -> int:
        core = ScoringCore(config)
        for i in range(2000):
            core.process(tx(f"s{i}", f"c{i % 50}", f"t{i % 20}", 10.0 + i % 7, i / 10))
        return sum(len(pickle.dumps(slot.quality)) for slot in core.model.models.values())

    in_memory = quality_bytes(ScoringSettings(presume_legit_days=0))
    on_disk = quality_bytes(
        ScoringSettings(presume_legit_days=0, waiting_cache_mb=8).placed(
            waiting_store=tmp_path / "w.db"
        )
    )
    assert in_memory > 2000 * 10 and on_disk < 2000, (in_memory, on_disk)


def run_on_disk(
    messages: list[Any], config: Any, path: Path, metrics: DetectorMetrics | None = None
) -> list[Decision]:
    decisions: list[SinkMessage] = []
    sinks = Sinks(
        decisions=TestingSink(decisions),
        alerts=TestingSink([]),
        dead_letters=TestingSink([]),
        model_status=TestingSink([]),
    )
    flow = build_flow(
        config,
        source=TestingSource(messages, batch_size=100),
        sinks=sinks,
        waiting=path,
        metrics=metrics or DetectorMetrics(),
    )
    run_main(flow)
    return [Decision.model_validate_json(v) for v in values(decisions)]


def test_the_flow_on_the_disk_store_decides_as_the_core(tmp_path: Path) -> None:
    events = _simulated_events(1500)
    config = settings(threshold_mode="fixed", status_interval_seconds=3600.0)
    flow = {
        d.transaction_id: d for d in run_on_disk(_feed_of(events).messages, config, tmp_path / "w")
    }
    core = _scored_by_core(events, config)
    assert {k: _comparable(v) for k, v in flow.items()} == {
        k: _comparable(v) for k, v in core.items()
    }


def test_quiet_cards_and_terminals_leave_the_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import detector.flow.steps as dataflow

    monkeypatch.setattr(dataflow, "IDLE_CHECK_SECONDS", 0.2)
    feed = Feed()
    for i in range(20):  # twenty cards and terminals, then silence from them
        feed.transaction(tx(f"old{i}", f"card{i}", f"term{i}", 10.0, minutes=i))
    # Much later (past every horizon), one busy card at one terminal.
    for i in range(5):
        feed.transaction(tx(f"new{i}", "busy", "term-busy", 10.0, minutes=100 * 24 * 60 + i))
    metrics = DetectorMetrics()
    config = settings(status_interval_seconds=3600.0, presume_legit_days=14.0)
    messages: list[Any] = [*feed.messages, TestingSource.PAUSE(timedelta(seconds=1.5))]
    decisions = run_on_disk(messages, config, tmp_path / "w", metrics)
    assert len(decisions) == 25
    cards, terminals, _pending, _parked = metrics.state.totals()
    assert (cards, terminals) == (1, 1), "only the busy card and terminal remain"


def test_a_quiet_terminal_presumes_its_transactions_legitimate_on_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import detector.flow.steps as dataflow

    monkeypatch.setattr(dataflow, "IDLE_CHECK_SECONDS", 0.2)
    feed = Feed()
    for i in range(5):  # five transactions at a terminal that then goes quiet
        feed.transaction(tx(f"quiet{i}", f"card{i}", "term-quiet", 10.0, minutes=i))
    # Traffic elsewhere moves event time on by 20 days.
    feed.transaction(tx("elsewhere", "card-x", "term-x", 10.0, minutes=20 * 24 * 60))
    statuses: list[SinkMessage] = []
    sinks = Sinks(
        decisions=TestingSink([]),
        alerts=TestingSink([]),
        dead_letters=TestingSink([]),
        model_status=TestingSink(statuses),
    )
    config = settings(status_interval_seconds=0.1, presume_legit_days=14.0)
    messages: list[Any] = [*feed.messages, TestingSource.PAUSE(timedelta(seconds=1.5))]
    flow = build_flow(
        config,
        source=TestingSource(messages, batch_size=100),
        sinks=sinks,
        waiting=tmp_path / "w",
        metrics=DetectorMetrics(),
    )
    run_main(flow)

    last = ModelStatus.model_validate_json(values(statuses)[-1])
    assert last.labels_by_source.get("presumed") == 5


def test_labels_join_the_features_on_disk(tmp_path: Path) -> None:
    feed = Feed()
    first = tx("t1", "card1", "term1", 10.0, minutes=0)
    feed.transaction(first)
    feed.raw(
        Label(
            transaction_id="t1",
            card_id="card1",
            label="fraud",
            source="analyst",
            labeled_at=first.timestamp + timedelta(days=30),
        )
        .model_dump_json()
        .encode(),
        topic="labels",
        key=b"card1",
    )
    feed.transaction(tx("t2", "card1", "term1", 10.0, minutes=31 * 24 * 60))
    config = settings(status_interval_seconds=3600.0)
    metrics = DetectorMetrics()
    decisions = run_on_disk(feed.messages, config, tmp_path / "w", metrics)
    assert [d.transaction_id for d in decisions] == ["t1", "t2"]
    assert metrics.state.totals()[2] == 2, "both vectors wait on disk"


def test_two_worker_threads_share_the_store(tmp_path: Path) -> None:
    # Bytewax's workers are threads Python did not start: each keeps its own connection
    # from one call to the next (a lost one would hold its write lock on the others).
    from bytewax.testing import cluster_main

    from detector.contracts import DeadLetter

    events = _simulated_events(1500)
    config = settings(threshold_mode="fixed", status_interval_seconds=3600.0, workers=2)
    decisions: list[SinkMessage] = []
    dead: list[SinkMessage] = []
    sinks = Sinks(
        decisions=TestingSink(decisions),
        alerts=TestingSink([]),
        dead_letters=TestingSink(dead),
        model_status=TestingSink([]),
    )
    metrics = DetectorMetrics()
    flow = build_flow(
        config,
        source=TestingSource(_feed_of(events).messages, batch_size=100),
        sinks=sinks,
        waiting=tmp_path / "w",
        metrics=metrics,
    )
    cluster_main(flow, [], 0, worker_count_per_proc=2)
    assert [DeadLetter.model_validate_json(v).error for v in values(dead)] == []
    assert len(values(decisions)) == sum(isinstance(e, Transaction) for e in events)
    assert metrics.state.totals()[2] == len(values(decisions)), "every vector waits on disk"
