"""A planted attack through the real detector process: its events on ``detector-events``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from detector.contracts import Decision, DetectorEvent
from detector.local.broker_config import find_free_ports
from detector.local.topics import create_topics
from detector.replay.simulator import PLANTED_ATTACK, SimulationConfig, simulate
from detector.settings import Settings
from tests.integration.conftest import own_topics
from tests.integration.kafka_io import consume_all, produce
from tests.integration.processes import detector_process, wait_until
from tests.integration.test_detector_metrics import scrape, stop, total

pytestmark = pytest.mark.slow

START = datetime(2018, 4, 1, tzinfo=UTC)
ATTACK = START + timedelta(hours=12)


def test_a_planted_burst_reaches_the_events_topic_and_sends_the_terminal_to_review(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    # One partition: the detector reads the day in time order, as it would live (a
    # backlog read from several partitions mixes event times, which the decisions
    # checked below depend on).
    settings = own_topics(kafka_settings)
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"topic_partitions": 1})}
    )
    create_topics(settings)
    sim = SimulationConfig(
        n_customers=400,
        n_terminals=300,
        seed=4,
        start=START,
        days=1,
        attack_at=ATTACK,
        attack_terminal=5,
        attack_cards=30,
    )
    records = list(simulate(sim))
    planted = [r.transaction for r in records if r.scenario == PLANTED_ATTACK]
    assert len(planted) == 30
    port = find_free_ports(1)[0]
    log = tmp_path / "detector.log"
    proc = detector_process(
        settings,
        tmp_path,
        log,
        {"FRAUDSTREAM_METRICS_PORT": str(port), "FRAUDSTREAM_THRESHOLD_MODE": "volume"},
    )
    try:
        produce(
            settings,
            settings.kafka.topic_transactions,
            [(r.transaction.card_id, r.transaction.model_dump_json().encode()) for r in records],
        )

        def both_events() -> list[DetectorEvent] | None:
            events = [
                DetectorEvent.model_validate_json(v)
                for v in consume_all(settings, settings.kafka.topic_detector_events)
            ]
            kinds = {e.kind for e in events}
            return events if {"terminal_burst", "card_testing"} <= kinds else None

        events = wait_until("the burst on detector-events", both_events, proc, log)

        def all_decided() -> list[Decision] | None:
            decisions = consume_all(settings, settings.kafka.topic_decisions)
            return (
                [Decision.model_validate_json(v) for v in decisions]
                if len(decisions) == len(records)
                else None
            )

        decisions = wait_until("every decision", all_decided, proc, log)

        def counted() -> float | None:
            got = scrape(port)
            n = total(got[1], "fraudstream_detector_events_total") if got else 0.0
            return n if n >= len(events) else None

        wait_until("the events counted", counted, proc, log)
        got = scrape(port)
    finally:
        stop(proc)
    assert got is not None
    _, found = got
    assert total(found, "fraudstream_detector_events_total", kind="terminal_burst") == 1
    assert total(found, "fraudstream_detector_events_total", kind="card_testing") == 1
    assert total(found, "fraudstream_terminals_in_burst") == 1

    burst = next(e for e in events if e.kind == "terminal_burst")
    assert burst.subject == "term-5" and burst.terminals == ["term-5"]
    assert burst.since <= ATTACK + timedelta(seconds=1)
    assert set(burst.cards) <= {t.card_id for t in planted}
    # the same change, noticed once: each event once on the topic
    assert len({e.event_id for e in events}) == len(events)
    # from the moment it was noticed, the terminal's transactions go to review
    # (BURST_REVIEW_MINUTES, an hour by default, after the last burst transaction)
    noticed, hour = burst.detected_at, timedelta(hours=1)
    attacked = [
        d
        for d in decisions
        if d.terminal_id == "term-5" and noticed <= d.transaction_time < noticed + hour
    ]
    assert len(attacked) >= 15
    assert all(d.decision != "allow" for d in attacked)
    assert all(any(r.startswith("terminal term-5: ") for r in d.reasons) for d in attacked)
