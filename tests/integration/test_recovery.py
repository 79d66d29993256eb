"""A crash of the detector process: it resumes from its snapshot, loses nothing, and what it
decides again carries the same ids."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from detector.contracts import Alert, Decision, ModelStatus
from detector.settings import Settings
from detector.simulator import SimulationConfig, simulate
from tests.integration.kafka_io import consume_all, produce

pytestmark = pytest.mark.slow

TOTAL = 20_000


def detector_process(settings: Settings, recovery: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FRAUDSTREAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "FRAUDSTREAM_RECOVERY_DIR": str(recovery),
        "FRAUDSTREAM_SNAPSHOT_INTERVAL_SECONDS": "0.5",
        "FRAUDSTREAM_STATUS_INTERVAL_SECONDS": "0.5",
        "FRAUDSTREAM_LOG_LEVEL": "WARNING",
        **{
            f"FRAUDSTREAM_{name.upper()}": getattr(settings, name)
            for name in Settings.model_fields
            if name.startswith("topic_") and isinstance(getattr(settings, name), str)
        },
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "detector", "detect"], env=env, stdout=out, stderr=out
        )


def decided(settings: Settings) -> list[Decision]:
    return [
        Decision.model_validate_json(v) for v in consume_all(settings, settings.topic_decisions)
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
        settings.topic_transactions,
        [(t.card_id, t.model_dump_json().encode()) for t in txs],
    )

    first = detector_process(settings, recovery, log)
    wait_for(settings, lambda ds: len(ds) >= 3000, first, log)
    first.send_signal(signal.SIGKILL)  # a crash: no chance to finish anything
    first.wait(10)
    crashed_at = len(decided(settings))
    assert crashed_at < TOTAL, "the detector finished before it could be killed"

    second = detector_process(settings, recovery, log)
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
    alerts = [Alert.model_validate_json(v) for v in consume_all(settings, settings.topic_alerts)]
    ids_by_tx: dict[str, set[str]] = {}
    for alert in alerts:
        ids_by_tx.setdefault(alert.transaction.transaction_id, set()).add(alert.alert_id)
    assert all(len(ids) == 1 for ids in ids_by_tx.values()), "a replay made a second alert id"

    # The model resumed with its state: it did not start counting from zero again.
    statuses = [
        ModelStatus.model_validate_json(v)
        for v in consume_all(settings, settings.topic_model_status)
    ]
    assert statuses[-1].transactions_scored == TOTAL
