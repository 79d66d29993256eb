"""A crash of the detector process: it resumes from its snapshot, loses nothing, and what it
decides again carries the same ids."""

from __future__ import annotations

import contextlib
import itertools
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from detector.contracts import Alert, Decision, ModelStatus
from detector.replay.simulator import SimulationConfig, simulate
from detector.settings import Settings
from tests.integration.kafka_io import consume_all, produce
from tests.integration.processes import detector_process

pytestmark = pytest.mark.slow

TOTAL = 20_000


def start_detector(settings: Settings, tmp_path: Path, log: Path) -> subprocess.Popen[bytes]:
    return detector_process(settings, tmp_path, log, {"FRAUDSTREAM_STATUS_INTERVAL_SECONDS": "0.5"})


def committed_epoch(recovery: Path) -> int:
    """The last epoch whose snapshot the detector committed (0 before the first)."""
    epoch = 0
    for part in recovery.glob("part-*.sqlite3"):
        with contextlib.closing(sqlite3.connect(f"file:{part}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT MAX(commit_epoch) FROM commits").fetchone()
        epoch = max(epoch, row[0] or 0)
    return epoch


def decided(settings: Settings) -> list[Decision]:
    return [
        Decision.model_validate_json(v)
        for v in consume_all(settings, settings.kafka.topic_decisions)
    ]


def wait_for(
    settings: Settings, predicate: object, proc: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        if predicate(decided(settings)):  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise AssertionError("timed out\n" + log.read_text()[-3000:])


def test_detector_crash_resumes_from_snapshot_with_same_ids(
    unique_topics: Settings, tmp_path: Path
) -> None:
    settings = unique_topics
    recovery = tmp_path / "recovery"
    log = tmp_path / "detector.log"
    records = itertools.islice(simulate(SimulationConfig(n_customers=500, n_terminals=1000)), TOTAL)
    txs = [r.transaction for r in records]
    produce(
        settings,
        settings.kafka.topic_transactions,
        [(t.card_id, t.model_dump_json().encode()) for t in txs],
    )

    first = start_detector(settings, tmp_path, log)
    # Kill it once it has decided a good part and a snapshot of that is committed (under
    # load the first snapshot may come late; without one, everything is decided again).
    wait_for(settings, lambda ds: len(ds) >= 3000 and committed_epoch(recovery) >= 2, first, log)
    first.send_signal(signal.SIGKILL)  # a crash: no chance to finish anything
    first.wait(10)
    crashed_at = len(decided(settings))
    assert crashed_at < TOTAL, "the detector finished before it could be killed"

    second = start_detector(settings, tmp_path, log)
    try:
        wait_for(
            settings,
            lambda ds: {d.transaction_id for d in ds} >= {t.transaction_id for t in txs},
            second,
            log,
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(20)

    decisions = decided(settings)
    counts = Counter(d.transaction_id for d in decisions)
    assert set(counts) == {t.transaction_id for t in txs}, "a transaction was lost"
    again = [tx for tx, n in counts.items() if n > 1]
    # At least once: only the epoch in flight at the crash is decided again.
    assert len(again) < crashed_at
    alerts = [
        Alert.model_validate_json(v) for v in consume_all(settings, settings.kafka.topic_alerts)
    ]
    ids_by_tx: dict[str, set[str]] = {}
    for alert in alerts:
        ids_by_tx.setdefault(alert.transaction.transaction_id, set()).add(alert.alert_id)
    assert all(len(ids) == 1 for ids in ids_by_tx.values()), "a replay made a second alert id"

    # The model resumed with its state: it did not start counting from zero again.
    statuses = [
        ModelStatus.model_validate_json(v)
        for v in consume_all(settings, settings.kafka.topic_model_status)
    ]
    assert statuses[-1].transactions_scored == TOTAL
