"""Poison through the real broker: the detector process decides or dead-letters every record
and never stops.

Thousands of hostile records of every kind in ``tests/poison.py`` (records of 900 KB,
100,000 levels of nesting, subnormal amounts, labels and control messages that make no
sense) go to the running detector interleaved with simulated valid traffic. Each record
is accounted for by its source coordinates: a dead letter names the topic, partition
and offset it came from, and a decision the card and transaction. The process must be
alive throughout, and still decide a valid transaction sent afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, Producer

from detector.contracts import DeadLetter, Decision, RejectReason
from detector.replay.simulator import SimulationConfig, simulate
from detector.settings import Settings
from tests.integration.kafka_io import consume_all
from tests.integration.processes import detector_process, wait_until
from tests.poison import corpus, kinds_of
from tests.poison_records import CONTROL, LABELS, TRANSACTIONS, Expect, PoisonRecord, valid_tx

pytestmark = pytest.mark.slow

ROUNDS = 9  # about 220 light records a round, plus the heavy kinds once
VALID = 2_000
# The producer's (librdkafka's) default largest record; the broker's is 1,048,588 bytes.
# Every dead letter must fit both.
RECORD_LIMIT = 1_000_000


@dataclass
class Produced:
    """A record as sent, and where it landed."""

    record: PoisonRecord
    topic: str
    partition: int = -1
    offset: int = -1
    dead: list[DeadLetter] = field(default_factory=list)

    @property
    def coordinates(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)


def topic_names(settings: Settings) -> dict[str, str]:
    return {
        TRANSACTIONS: settings.kafka.topic_transactions,
        LABELS: settings.kafka.topic_labels,
        CONTROL: settings.kafka.topic_control,
    }


def produce_records(settings: Settings, records: list[PoisonRecord]) -> list[Produced]:
    """Send ``records`` in order and note each one's partition and offset."""
    names = topic_names(settings)
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            # Room for the 900 KB records (the broker takes up to ~1 MB by default).
            "message.max.bytes": RECORD_LIMIT,
        }
    )
    produced = [Produced(r, names[r.topic]) for r in records]
    failures: list[str] = []

    def delivered(entry: Produced) -> Callable[[KafkaError | None, Message], None]:
        def report(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                failures.append(f"{entry.record.kind}: {error}")
                return
            partition, offset = message.partition(), message.offset()
            assert partition is not None and offset is not None
            entry.partition, entry.offset = partition, offset

        return report

    for entry in produced:
        record = entry.record
        while True:
            try:
                producer.produce(
                    entry.topic, value=record.value, key=record.key, on_delivery=delivered(entry)
                )
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.5)
        producer.poll(0)
    assert producer.flush(60) == 0, "records still queued after 60 s"
    assert not failures, f"{len(failures)} record(s) not delivered: {failures[:5]}"
    return produced


def interleave(
    poison: list[PoisonRecord], valid: list[PoisonRecord], seed: int
) -> list[PoisonRecord]:
    """Both lists merged at random, each in its own order."""
    rng = random.Random(seed)
    out: list[PoisonRecord] = []
    i = j = 0
    while i < len(poison) or j < len(valid):
        left_p, left_v = len(poison) - i, len(valid) - j
        if rng.random() * (left_p + left_v) < left_p:
            out.append(poison[i])
            i += 1
        else:
            out.append(valid[j])
            j += 1
    return out


def simulated(n: int) -> list[PoisonRecord]:
    config = SimulationConfig(n_customers=300, n_terminals=600, seed=11)
    out = []
    for record in simulate(config):
        tx = record.transaction
        out.append(valid_tx("valid_traffic", json.loads(tx.model_dump_json(exclude_none=True))))
        if len(out) == n:
            return out
    raise AssertionError("the simulator ended")


def logical_topic(settings: Settings, topic: str | None) -> str | None:
    return {v: k for k, v in topic_names(settings).items()}.get(topic or "")


def identity_of(settings: Settings, dead: DeadLetter) -> tuple[str, ...] | None:
    """Who a dead letter without coordinates is about, from the record it kept."""
    topic = logical_topic(settings, dead.source_topic)
    try:
        body: Any = json.loads(base64.b64decode(dead.value_base64))
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    if topic == CONTROL:
        return (CONTROL, str(body.get("control_id")))
    if topic in (TRANSACTIONS, LABELS):
        return (topic, str(body.get("card_id")).strip(), str(body.get("transaction_id")).strip())
    return None


def must_have_outcome(record: PoisonRecord) -> bool:
    return record.expect is not Expect.QUIET


@dataclass
class Accounting:
    """Outcomes matched to records; what did not match is a problem."""

    problems: list[str] = field(default_factory=list)
    without_coordinates: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)

    def problem(self, text: str) -> None:
        self.problems.append(text)


def describe(entry: Produced) -> str:
    value = entry.record.value
    shown = value[:100] if value is not None else None
    return f"{entry.record.kind} {entry.coordinates} {shown!r}"


def account(
    settings: Settings,
    produced: list[Produced],
    decisions: list[Decision],
    dead_letters: list[DeadLetter],
) -> Accounting:
    result = Accounting()
    by_coordinates = {e.coordinates: e for e in produced}
    by_identity: dict[tuple[str, ...], list[Produced]] = defaultdict(list)
    for entry in produced:
        if entry.record.identity is not None:
            by_identity[entry.record.identity].append(entry)

    # Dead letters: at their record's coordinates, or (the core's, without them) by who
    # they are about.
    loose: Counter[tuple[str, ...]] = Counter()
    for dead in dead_letters:
        result.outcomes[f"dead:{dead.reason.value}"] += 1
        if dead.source_topic is None or dead.partition is None or dead.offset is None:
            result.without_coordinates[dead.reason.value] += 1
        if dead.partition is not None and dead.offset is not None:
            owner = by_coordinates.get((dead.source_topic or "", dead.partition, dead.offset))
            if owner is None:
                result.problem(f"a dead letter of no record sent: {dead.model_dump_json()[:300]}")
            else:
                owner.dead.append(dead)
            continue
        identity = identity_of(settings, dead)
        if identity is None or identity not in by_identity:
            result.problem(f"a dead letter of no record sent: {dead.model_dump_json()[:300]}")
        else:
            loose[identity] += 1

    decided: Counter[tuple[str, ...]] = Counter(
        (TRANSACTIONS, d.card_id, d.transaction_id) for d in decisions
    )
    result.outcomes["decisions"] = len(decisions)
    for identity, n in decided.items():
        if n > 1:
            result.problem(f"{n} decisions for {identity}")
        if identity not in by_identity:
            result.problem(f"a decision for no transaction sent: {identity}")

    # Records with nothing to tell them apart by: one dead letter each, where they were.
    for entry in produced:
        record = entry.record
        reasons = [d.reason for d in entry.dead]
        if record.identity is None and len(entry.dead) != 1:
            result.problem(f"{len(entry.dead)} dead letters {reasons} for {describe(entry)}")
        if record.reason is not None and any(r is not record.reason for r in reasons):
            result.problem(f"reason {reasons} instead of {record.reason} for {describe(entry)}")
        # A dead letter keeps its record: whole, or a prefix with the digest of the whole.
        original = record.value or b""
        for dead in entry.dead:
            digest = getattr(dead, "value_sha256", "")
            if digest and digest != hashlib.sha256(original).hexdigest():
                result.problem(f"a dead letter's digest is not its record's: {describe(entry)}")
            kept = dead.value
            if not original.startswith(kept) or (
                not getattr(dead, "truncated", False) and kept != original
            ):
                result.problem(f"a dead letter does not keep its record: {describe(entry)}")

    # Records about the same transaction or control message: as many outcomes as records
    # (a decision, then dead letters for repeats); valid labels and controls, at most one.
    for identity, entries in by_identity.items():
        expects = Counter(e.record.expect for e in entries)
        n_decisions = decided.get(identity, 0)
        n_dead = sum(len(e.dead) for e in entries) + loose.get(identity, 0)
        needed = sum(must_have_outcome(e.record) for e in entries)
        total = n_decisions + n_dead
        what = f"{identity} ({dict(expects)}): {n_decisions} decisions, {n_dead} dead letters"
        if not needed <= total <= len(entries):
            result.problem(f"{what}, for {len(entries)} records: {describe(entries[0])}")
        if expects[Expect.DECISION] and n_decisions != 1:
            result.problem(f"{what}: a valid transaction not decided once")
        if identity[0] != TRANSACTIONS and n_decisions:
            result.problem(f"{what}: a decision for a label or control message")
        dead_wanted = expects[Expect.DUPLICATE] + expects[Expect.DEAD_LETTER]
        if n_dead < dead_wanted:
            result.problem(f"{what}: {dead_wanted} dead letters expected")
    return result


def test_poison_is_decided_or_dead_lettered_and_never_stops_the_detector(
    unique_topics: Settings, tmp_path: Path
) -> None:
    settings = unique_topics
    log = tmp_path / "detector.log"
    now = datetime.now(UTC)
    poison = corpus(ROUNDS, run=f"p{uuid.uuid4().hex[:6]}", now=now, seed=3)
    kinds = kinds_of(poison)
    assert len(poison) >= 2000 and len(kinds) >= 30, (len(poison), len(kinds))
    records = interleave(poison, simulated(VALID), seed=5)

    proc = detector_process(settings, tmp_path, log, {})
    try:
        # Poison from the first record on: the detector starts on it.
        produced = produce_records(settings, records)
        assert proc.poll() is None, log.read_text()[-3000:]

        # A valid transaction after all of it is still decided.
        sentinel = valid_tx(
            "sentinel",
            {
                "transaction_id": f"after-{uuid.uuid4().hex}",
                "timestamp": (now - timedelta(seconds=5)).isoformat(),
                "card_id": "card-after-the-poison",
                "terminal_id": "term-after-the-poison",
                "amount": 25.0,
            },
        )
        produced += produce_records(settings, [sentinel])
        needed = sum(must_have_outcome(e.record) for e in produced)

        def decisions() -> list[Decision]:
            return [
                Decision.model_validate_json(v)
                for v in consume_all(settings, settings.kafka.topic_decisions)
            ]

        def dead_letters() -> list[bytes]:
            return consume_all(settings, settings.kafka.topic_dead_letters)

        def settled() -> tuple[list[Decision], list[bytes]] | None:
            ds, dls = decisions(), dead_letters()
            decided_sentinel = any(d.transaction_id == sentinel.transaction_id for d in ds)
            if decided_sentinel and len(ds) + len(dls) >= needed:
                return ds, dls
            return None

        wait_until("every record decided or dead-lettered", settled, proc, log, timeout=300)
        # A little longer: anything decided or dead-lettered twice shows up too.
        time.sleep(3)
        assert proc.poll() is None, log.read_text()[-3000:]
        final_decisions, raw_dead = decisions(), dead_letters()
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        stop(proc)

    # Every dead letter fits the broker and names its reason.
    too_large = [len(raw) for raw in raw_dead if len(raw) >= RECORD_LIMIT]
    assert not too_large, f"dead letters of {too_large} bytes exceed {RECORD_LIMIT}"
    dead = [DeadLetter.model_validate_json(raw) for raw in raw_dead]
    assert all(isinstance(d.reason, RejectReason) and d.error for d in dead)
    internal = [d.error for d in dead if d.reason.value == "internal_error"]

    result = account(settings, produced, final_decisions, dead)
    summary = (
        f"{len(produced)} records ({len(poison)} poison of {len(kinds)} kinds), "
        f"outcomes {dict(result.outcomes)}"
    )
    assert not result.problems, f"{len(result.problems)} problems; {summary}\n" + "\n".join(
        result.problems[:40]
    )
    print(summary)  # shown with -s
    failures = []
    # Nothing failed inside a step: every poison record has a reason of its own.
    if internal:
        failures.append(f"{len(internal)} internal errors, e.g. {sorted(set(internal))[:5]}")
    # Dead letters of the core's steps name their record too (topic, partition, offset).
    if result.without_coordinates:
        failures.append(
            "dead letters without source coordinates, by reason: "
            f"{dict(result.without_coordinates)}"
        )
    assert not failures, f"{summary}\n" + "\n".join(failures)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
