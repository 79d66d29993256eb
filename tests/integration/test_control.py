"""An admin's control messages reach the running detector: no restart, a status at once."""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from detector.contracts import Control, Decision, ModelStatus, ThresholdChange, Transaction
from detector.replay.simulator import SimulationConfig, simulate
from detector.settings import Settings
from tests.integration.kafka_io import consume_all, produce
from tests.integration.processes import detector_process, wait_until

pytestmark = pytest.mark.slow

LOGREG, TREE = "hybrid-tail-logreg", "hybrid-tail-tree"


def start_detector(settings: Settings, tmp_path: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        # Statuses on a timer only once an hour: those the test sees follow its controls.
        "FRAUDSTREAM_STATUS_INTERVAL_SECONDS": "3600",
        "FRAUDSTREAM_CHALLENGERS": '["tree"]',
        "FRAUDSTREAM_THRESHOLD_MODE": "fixed",
        "FRAUDSTREAM_REVIEW_THRESHOLD": "1.0",
        "FRAUDSTREAM_BLOCK_THRESHOLD": "1.0",
    }
    return detector_process(settings, tmp_path, log, env)


def decisions(settings: Settings) -> dict[str, Decision]:
    values = consume_all(settings, settings.kafka.topic_decisions)
    return {d.transaction_id: d for d in map(Decision.model_validate_json, values)}


def statuses(settings: Settings) -> list[ModelStatus]:
    values = consume_all(settings, settings.kafka.topic_model_status)
    return [ModelStatus.model_validate_json(v) for v in values]


def send(settings: Settings, txs: list[Transaction]) -> None:
    produce(
        settings,
        settings.kafka.topic_transactions,
        [(t.card_id, t.model_dump_json().encode()) for t in txs],
    )


def send_control(settings: Settings, control: Control | bytes) -> None:
    value = control if isinstance(control, bytes) else control.model_dump_json().encode()
    produce(settings, settings.kafka.topic_control, [("model", value)])


def control(control_id: str, **fields: Any) -> Control:
    return Control(
        control_id=control_id, requested_by="admin", requested_at=datetime.now(UTC), **fields
    )


def decided(settings: Settings, txs: list[Transaction]) -> Callable[[], dict[str, Decision]]:
    def check() -> dict[str, Decision]:
        got = decisions(settings)
        return got if all(t.transaction_id in got for t in txs) else {}

    return check


def status_of(settings: Settings, control_id: str) -> Callable[[], dict[str, ModelStatus]]:
    def check() -> dict[str, ModelStatus]:
        got = {s.model_name: s for s in statuses(settings) if s.last_control_id == control_id}
        return got if set(got) == {LOGREG, TREE} else {}

    return check


def test_controls_apply_to_the_running_detector(unique_topics: Settings, tmp_path: Path) -> None:
    settings = unique_topics
    log = tmp_path / "detector.log"
    records = itertools.islice(simulate(SimulationConfig(n_customers=200, n_terminals=400)), 1500)
    txs = [r.transaction for r in records]
    first, second, third = txs[:1000], txs[1000:1250], txs[1250:]
    send(settings, first)

    proc = start_detector(settings, tmp_path, log)
    try:
        got = wait_until("the first decisions", decided(settings, first), proc, log)
        assert sum(got[t.transaction_id].decision == "block" for t in first) < len(first) / 10
        assert {got[t.transaction_id].model_name for t in first} == {LOGREG}

        # Block everything from now on: a status shows the change at once.
        started = time.monotonic()
        change = ThresholdChange(mode="fixed", review_threshold=0.0, block_threshold=0.0)
        send_control(settings, control("block-all", action="set_thresholds", thresholds=change))
        shown = wait_until("the new thresholds", status_of(settings, "block-all"), proc, log)
        assert time.monotonic() - started < 10
        for status in shown.values():
            assert (status.threshold_mode, status.review_threshold, status.block_threshold) == (
                "fixed",
                0.0,
                0.0,
            )
            assert status.transactions_scored == len(first)
        assert shown[LOGREG].deciding and not shown[TREE].deciding

        send(settings, second)
        got = wait_until("decisions after the change", decided(settings, second), proc, log)
        assert {got[t.transaction_id].decision for t in second} == {"block"}

        # An unknown model is refused whole; a malformed control is a dead letter too.
        send_control(settings, control("ghost", action="set_deciding_model", model_name="nope"))
        send_control(settings, b'{"control_id": "broken"}')
        # The tree challenger takes over.
        send_control(settings, control("to-tree", action="set_deciding_model", model_name=TREE))
        shown = wait_until("the new deciding model", status_of(settings, "to-tree"), proc, log)
        assert shown[TREE].deciding and not shown[LOGREG].deciding
        assert shown[TREE].threshold_mode == "fixed"

        send(settings, third)
        got = wait_until("decisions of the new model", decided(settings, third), proc, log)
        assert {got[t.transaction_id].model_name for t in third} == {TREE}
        assert {got[t.transaction_id].decision for t in third} == {"block"}

        def two_dead_letters() -> list[dict[str, Any]]:
            found = [
                json.loads(v) for v in consume_all(settings, settings.kafka.topic_dead_letters)
            ]
            return found if len(found) >= 2 else []

        dead = wait_until("the refused controls", two_dead_letters, proc, log)
        assert len(dead) == 2
        assert all(d["reason"] == "invalid" for d in dead)
        assert all(d["source_topic"] == settings.kafka.topic_control for d in dead)
        errors = {base64.b64decode(d["value_base64"]): d["error"] for d in dead}
        assert "action: Field required" in errors[b'{"control_id": "broken"}']
        [unknown] = [e for e in errors.values() if "unknown model" in e]
        assert "'nope'" in unknown and LOGREG in unknown and TREE in unknown
    finally:
        proc.terminate()
        proc.wait(30)
