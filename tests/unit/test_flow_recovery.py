"""The dataflow's recovery: the store of each process, the decisions of record after a crash."""

from __future__ import annotations

import json
from pathlib import Path

from bytewax.testing import TestingSink, TestingSource, run_main

from detector.contracts import Alert, Decision
from detector.dataflow import build_flow
from detector.flow.kafka import Sinks
from detector.flow.recovery import recovery_config
from detector.settings import DetectorSettings, Settings
from tests.unit.test_dataflow import START, Feed, SinkMessage, ordinary_traffic, settings, values


def test_a_cluster_on_one_host_shares_one_recovery_folder(tmp_path: Path) -> None:
    cluster = "127.0.0.1:2101;127.0.0.1:2102;127.0.0.1:2103"
    for process in (2, 0, 1, 0):  # in any order, and again after a restart
        recovery_config(
            Settings(
                detector=DetectorSettings(
                    recovery_dir=tmp_path, addresses=cluster, process_id=process
                )
            )
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "part-0.sqlite3",
        "part-1.sqlite3",
        "part-2.sqlite3",
    ]


def test_a_single_process_makes_its_store_once(tmp_path: Path) -> None:
    recovery_config(Settings(detector=DetectorSettings(recovery_dir=tmp_path)))
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    recovery_config(Settings(detector=DetectorSettings(recovery_dir=tmp_path)))
    assert before == {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert list(before) == ["part-0.sqlite3"]


def test_a_resumed_model_publishes_the_decision_of_record_again() -> None:
    feed = Feed()
    sent = ordinary_traffic(feed, 4)
    first = sent[2]
    record = Decision(
        transaction_id=first.transaction_id,
        card_id=first.card_id,
        terminal_id=first.terminal_id,
        amount=first.amount,
        score=0.97,
        decision="block",
        reasons=["decided before a crash"],
        model_name="hybrid-tail-logreg",
        model_version="0.1.0",
        transaction_time=first.timestamp,
        scored_at=START,
    )
    published = {(first.card_id, first.transaction_id): record.model_dump_json(indent=1).encode()}
    decisions: list[SinkMessage] = []
    alerts: list[SinkMessage] = []
    sinks = Sinks(
        decisions=TestingSink(decisions),
        alerts=TestingSink(alerts),
        dead_letters=TestingSink([]),
        model_status=TestingSink([]),
    )
    flow = build_flow(
        settings(),
        source=TestingSource(feed.messages),
        sinks=sinks,
        read_back=lambda _: dict(published),
    )
    run_main(flow)
    by_id = dict(
        zip(
            (json.loads(v)["transaction_id"] for v in values(decisions)),
            values(decisions),
            strict=True,
        )
    )
    assert by_id[first.transaction_id] == published[(first.card_id, first.transaction_id)]
    [alert] = [Alert.model_validate_json(v) for v in values(alerts) if b'"tx2"' in v]
    assert (alert.decision, alert.score, alert.reasons) == ("block", 0.97, record.reasons)
    assert alert.created_at == START
