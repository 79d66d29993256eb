"""Crashes while features wait for labels on disk: nothing lost, nothing learned twice.

The detector keeps the features of scored transactions in ``<recovery>/waiting-0.db``
until a label comes, presumes them legitimate after ``PRESUME_LEGIT_DAYS`` and deletes
them past ``LABEL_HORIZON_DAYS`` (``detector.waiting``). Here eight simulated days go
through it one day at a time, each with labels for some of that day's transactions,
and the detector is killed with SIGKILL in four of those days, then resumed on the same
recovery folder. Such a day goes in two halves: once the first is decided, its labels
learned and a snapshot of it committed, the second is sent and the detector killed as
soon as its first decision is on the topic, while it records that half's features,
learns its labels and presumes older days legitimate.

Every count is exact. A day's labels are all learned before the next day is sent, so
no labelled transaction can be presumed first (presumption needs ``PRESUME_LEGIT_DAYS``
of event time past it). The last day runs without a kill, so the last process reaches
the final event time and, at its idle check, presumes every terminal up to it and
purges up to it. Then:

- every transaction has a decision, and no label was dead-lettered (none lost its
  features);
- the model learned each label once, by source, and presumed legitimate exactly the
  unlabelled transactions at least ``PRESUME_LEGIT_DAYS`` older than the last one
  (``StoredPending.expire``: ``ts <= watermark - days``);
- the waiting file holds exactly the transactions not yet past the purge cutoff
  (``_purge_waiting``: rows with ``ts < watermark - horizon - margin`` go).

The idle check (``IDLE_CHECK_SECONDS``, a minute in production) runs every two seconds
here, so that presuming by the watermark and purging happen between the kills too.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from detector.contracts import Label, ModelStatus, Transaction
from detector.kafka_config import consumer_config
from detector.replay.simulator import SimulationConfig, simulate
from detector.settings import Settings
from detector.waiting import DAY, PURGE_MARGIN_SECONDS
from tests.integration.campaign import DecisionWatcher, end_offsets
from tests.integration.kafka_io import consume_all, produce
from tests.integration.processes import service_env, wait_until
from tests.integration.test_recovery import committed_epoch

pytestmark = pytest.mark.slow

DAYS = 8
PRESUME_LEGIT_DAYS = 2.0
LABEL_HORIZON_DAYS = 4.0
KILL_DAYS = (2, 3, 5, 6)  # never the last day: its process must reach the last event time
LABEL_SHARE = 0.05
IDLE_CHECK_SECONDS = 2.0
SIMULATION = SimulationConfig(n_customers=1000, n_terminals=300, days=DAYS, seed=20261201)

# ``python -m detector detect`` with a shorter idle check.
LAUNCHER = (
    "import sys\n"
    "import detector.flow.steps\n"
    "detector.flow.steps.IDLE_CHECK_SECONDS = float(sys.argv[1])\n"
    "sys.argv = ['fraudstream', 'detect']\n"
    "from detector.cli import main\n"
    "main()\n"
)


def start_detector(settings: Settings, tmp_path: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FRAUDSTREAM_RECOVERY_DIR": str(tmp_path / "recovery"),
        "FRAUDSTREAM_SNAPSHOT_INTERVAL_SECONDS": "0.5",
        "FRAUDSTREAM_STATUS_INTERVAL_SECONDS": "0.5",
        "FRAUDSTREAM_LOG_LEVEL": "WARNING",
        "FRAUDSTREAM_METRICS_PORT": "0",
        "FRAUDSTREAM_PRESUME_LEGIT_DAYS": f"{PRESUME_LEGIT_DAYS:g}",
        "FRAUDSTREAM_LABEL_HORIZON_DAYS": f"{LABEL_HORIZON_DAYS:g}",
        "FRAUDSTREAM_WAITING_CACHE_MB": "1",  # the waiting features live on disk
        **service_env(settings),
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, f"{IDLE_CHECK_SECONDS:g}"],
            env=env,
            stdout=out,
            stderr=out,
        )


class StatusWatcher:
    """Follows the model-status topic: the latest status published."""

    def __init__(self, settings: Settings) -> None:
        topic = settings.kafka.topic_model_status
        self.consumer = Consumer(
            consumer_config(
                settings, **{"group.id": f"test-{uuid.uuid4().hex}", "enable.auto.commit": False}
            )
        )
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        self.latest: ModelStatus | None = None

    def update(self) -> ModelStatus | None:
        while batch := self.consumer.consume(1000, timeout=0.2):
            for msg in batch:
                value = msg.value()
                if msg.error() is not None or value is None:
                    continue
                status = ModelStatus.model_validate_json(value)
                if self.latest is None or status.emitted_at >= self.latest.emitted_at:
                    self.latest = status
        return self.latest

    def close(self) -> None:
        self.consumer.close()


@dataclass
class Day:
    transactions: list[Transaction]
    labels: list[Label]


def simulated_days() -> list[Day]:
    """The simulation, day by day, with labels (the truth) for a share of each day."""
    rng = random.Random(SIMULATION.seed)
    start = SIMULATION.start.timestamp()
    by_day: list[Day] = [Day([], []) for _ in range(DAYS)]
    for record in simulate(SIMULATION):
        tx = record.transaction
        day = by_day[int((tx.epoch_seconds - start) // DAY)]
        day.transactions.append(tx)
        if rng.random() < LABEL_SHARE:
            fraud = bool(record.is_fraud)
            day.labels.append(
                Label(
                    transaction_id=tx.transaction_id,
                    card_id=tx.card_id,
                    label="fraud" if fraud else "legit",
                    source="chargeback" if fraud else "analyst",
                    labeled_at=tx.timestamp + timedelta(hours=1),
                )
            )
    return by_day


def halves(day: Day) -> list[Day]:
    """The day's first and second half of transactions, each with its labels."""
    middle = len(day.transactions) // 2
    first = {tx.transaction_id for tx in day.transactions[:middle]}
    return [
        Day(day.transactions[:middle], [lb for lb in day.labels if lb.transaction_id in first]),
        Day(day.transactions[middle:], [lb for lb in day.labels if lb.transaction_id not in first]),
    ]


def send(settings: Settings, day: Day) -> None:
    """The transactions, then their labels."""
    produce(
        settings,
        settings.kafka.topic_transactions,
        [(tx.card_id, tx.model_dump_json().encode()) for tx in day.transactions],
    )
    produce(
        settings,
        settings.kafka.topic_labels,
        [(lb.card_id, lb.model_dump_json().encode()) for lb in day.labels],
    )


def waiting_rows(path: Path) -> dict[str, float]:
    """The waiting file's transactions and their times (read-only, beside the detector)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return dict(db.execute("SELECT transaction_id, ts FROM waiting").fetchall())


def first_decisions(
    settings: Settings, published: int, proc: subprocess.Popen[bytes], log: Path
) -> None:
    """Return as soon as decisions beyond the first ``published`` are on the topic."""
    deadline = time.monotonic() + 60
    while sum(end_offsets(settings, settings.kafka.topic_decisions).values()) <= published:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no decision\n" + log.read_text()[-3000:]
        time.sleep(0.01)


def decided_of(decisions: DecisionWatcher, ids: set[str]) -> int:
    """How many of ``ids`` have a decision."""
    return sum(1 for _, tx_id in decisions.update() if tx_id in ids)


def day_done(
    decisions: DecisionWatcher,
    statuses: StatusWatcher,
    ids: set[str],
    scored: int,
    labels: Counter[str],
) -> bool:
    """Every one of ``ids`` decided, ``scored`` scored and ``labels`` learned, by source."""
    status = statuses.update()
    return (
        decided_of(decisions, ids) == len(ids)
        and status is not None
        and status.transactions_scored >= scored
        and all(status.labels_by_source.get(s, 0) >= n for s, n in labels.items())
    )


def test_crashes_while_labels_wait_on_disk_lose_nothing_and_learn_nothing_twice(
    unique_topics: Settings, tmp_path: Path
) -> None:
    settings = unique_topics
    recovery = tmp_path / "recovery"
    waiting = recovery / "waiting-0.db"
    log = tmp_path / "detector.log"
    days = simulated_days()
    everything = [tx for day in days for tx in day.transactions]
    labels = [label for day in days for label in day.labels]
    last = max(tx.epoch_seconds for tx in everything)
    labelled = {label.transaction_id for label in labels}
    presumed = sum(
        1
        for tx in everything
        if tx.transaction_id not in labelled and tx.epoch_seconds <= last - PRESUME_LEGIT_DAYS * DAY
    )
    cutoff = last - LABEL_HORIZON_DAYS * DAY - PURGE_MARGIN_SECONDS
    kept = {tx.transaction_id for tx in everything if tx.epoch_seconds >= cutoff}
    by_source = Counter(label.source for label in labels)
    by_class = Counter(label.label for label in labels)
    assert presumed and by_source["analyst"] and by_source["chargeback"]
    assert len(kept) < len(everything)

    decisions = DecisionWatcher(settings)
    statuses = StatusWatcher(settings)
    proc = start_detector(settings, tmp_path, log)
    kills: list[str] = []
    sent: list[Transaction] = []
    sent_labels: Counter[str] = Counter()
    try:
        for number, day in enumerate(days):
            # A day with a kill goes in two halves: the first decided, learned and in a
            # committed snapshot, the kill while the second is under way.
            parts = halves(day) if number in KILL_DAYS else [day]
            for half, part in enumerate(parts):
                ids = {tx.transaction_id for tx in part.transactions}
                published = sum(end_offsets(settings, settings.kafka.topic_decisions).values())
                send(settings, part)
                sent.extend(part.transactions)
                sent_labels.update(label.source for label in part.labels)
                if half == 1:
                    first_decisions(settings, published, proc, log)
                    proc.send_signal(signal.SIGKILL)  # a crash: no chance to finish anything
                    proc.wait(10)
                    status = statuses.update()
                    learned = dict(status.labels_by_source) if status else {}
                    kills.append(
                        f"day {number}: killed at epoch {committed_epoch(recovery)} with "
                        f"{decided_of(decisions, ids)} of {len(ids)} decided; status "
                        f"{learned} of {dict(sent_labels)} labels sent"
                    )
                    proc = start_detector(settings, tmp_path, log)
                done = partial(day_done, decisions, statuses, ids, len(sent), Counter(sent_labels))
                wait_until(f"day {number} decided and its labels learned", done, proc, log)
                if len(parts) == 2 and half == 0:
                    epoch = committed_epoch(recovery) + 1
                    wait_until(
                        f"a snapshot of day {number}'s first half",
                        lambda at_least=epoch: committed_epoch(recovery) >= at_least,
                        proc,
                        log,
                    )

        def settled() -> ModelStatus | None:
            status = statuses.update()
            rows = waiting_rows(waiting) if waiting.exists() else {}
            purged = bool(rows) and min(rows.values()) >= cutoff
            if purged and status and status.labels_by_source.get("presumed", 0) >= presumed:
                return status
            return None

        wait_until("every terminal presumed and purged", settled, proc, log)
        time.sleep(3 * IDLE_CHECK_SECONDS)  # anything learned twice would show by now
        final = statuses.update()
        rows = waiting_rows(waiting)
    finally:
        decisions.close()
        statuses.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
    print("\n".join(kills))

    assert len(kills) == len(KILL_DAYS)
    decided = Counter(d for _, d in decisions.decided)
    assert set(decided) == {tx.transaction_id for tx in everything}, "a transaction was lost"
    dead = consume_all(settings, settings.kafka.topic_dead_letters)
    assert not dead, f"{len(dead)} dead letter(s), e.g. {dead[:2]}"

    assert final is not None
    assert final.transactions_scored == len(everything)
    assert final.labels_by_source == {**by_source, "presumed": presumed}, kills
    assert final.labels_learned == {
        "fraud": by_class["fraud"],
        "legit": by_class["legit"] + presumed,
    }, kills
    # The disk store was used: it holds every transaction not yet past the cutoff.
    assert set(rows) == kept, (
        f"{len(kept - set(rows))} waiting row(s) lost, {len(set(rows) - kept)} not purged"
    )
