"""A crash campaign: a live stream, a detector killed with SIGKILL again and again.

``run_campaign`` streams simulated transactions (``detector.replay.simulator``) to the broker at
``rate`` per second, starts the detector process, kills it with SIGKILL ``kills`` times
at seeded random intervals and restarts it each time, then stops the stream, lets the
detector decide everything and reads every decision published. It counts:

- *sent*: transactions the broker acknowledged;
- *lost*: sent transactions without any decision;
- *changed*: transactions with two decision records that differ (the whole JSON, so a
  decision published again must be the very same record), and among them those whose
  verdict (decision, score, reasons) differs;
- *duplicates*: extra identical decision records, in total and per crash (a record is
  put down to the crash before the process that published it, found from the decision
  topic's end offsets at each kill).

Run it as a script against a broker of its own::

    python -m tests.integration.campaign --kills 20 --rate 500
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from detector.local.broker import LocalBroker
from detector.local.broker_config import find_free_ports
from detector.local.topics import create_topics
from detector.replay.simulator import SimulationConfig, simulate
from detector.settings import KafkaSettings, LocalSettings, Settings
from tests.integration.processes import detector_process

REPO = Path(__file__).resolve().parent.parent.parent
JARS_CACHE = REPO / ".fraudstream" / "kafka" / "libs"
# A crash publishes again what the killed process published since its last committed
# snapshot. Under a steady stream that is about one snapshot interval of decisions. But
# a restarted process first catches up with what arrived while it was down (its first
# decision comes 3.5 to 6 s after its start on two cores: imports, snapshot, read-back,
# consumer start) and decides it in one epoch (up to a Kafka poll, kafka_batch_size per
# partition); a kill right after that epoch is published, before its snapshot is
# committed, publishes it all again. The margin is about that restart plus the commit
# lag. (A backlog of more than one poll, kafka_batch_size x partitions, may exceed it.)
DEFAULT_MARGIN_SECONDS = 5.0

Identity = tuple[str, str]  # (card_id, transaction_id)


@dataclass(frozen=True)
class CampaignConfig:
    """How hard to crash the detector."""

    kills: int = 10
    rate: float = 200.0  # transactions per second
    seed: int = 0
    min_interval: float = 1.0  # seconds between a (re)start and the next kill
    max_interval: float = 10.0
    snapshot_interval: float = 1.0  # FRAUDSTREAM_SNAPSHOT_INTERVAL_SECONDS
    settle_timeout: float = 180.0  # for the last process to decide everything
    customers: int = 2000
    terminals: int = 4000
    log_level: str = "WARNING"  # the detector's (its log is kept in the work folder)


@dataclass
class Crash:
    """One kill, and what the process started after it published again."""

    number: int
    uptime: float  # seconds since the killed process was started
    sent: int  # transactions acknowledged by the broker at the kill
    decided: int  # decision records on the topic right after the kill
    published: int  # of which the killed process published
    first_decision: float | None = None  # seconds from its start to its first decision
    duplicates: int = 0
    changed: int = 0


@dataclass
class CampaignResult:
    config: CampaignConfig
    sent: int
    records: int  # decision records read
    decided: int  # transactions with at least one decision
    lost: list[Identity]
    changed: list[Identity]
    verdict_changed: list[Identity]
    duplicates: int
    before_any_crash: int  # duplicates published by the first process (should be none)
    crashes: list[Crash]
    seconds: float
    examples: list[str] = field(default_factory=list)

    @property
    def max_duplicates_per_crash(self) -> int:
        return max((c.duplicates for c in self.crashes), default=0)

    def duplicate_bound(self, margin: float = DEFAULT_MARGIN_SECONDS) -> float:
        """The decisions of about one snapshot interval: rate x (interval + margin)."""
        return self.config.rate * (self.config.snapshot_interval + margin)

    def _slowest_restart(self) -> str:
        times = [c.first_decision for c in self.crashes[1:] if c.first_decision is not None]
        return f"{max(times):.1f}" if times else "-"

    def table(self, margin: float = DEFAULT_MARGIN_SECONDS) -> str:
        c = self.config
        rows = [
            ("kills", f"{len(self.crashes)}"),
            ("rate (tx/s)", f"{c.rate:g}"),
            ("snapshot interval (s)", f"{c.snapshot_interval:g}"),
            ("seconds", f"{self.seconds:.0f}"),
            ("transactions sent", f"{self.sent}"),
            ("decision records", f"{self.records}"),
            ("transactions decided", f"{self.decided}"),
            ("lost (no decision)", f"{len(self.lost)}"),
            ("changed (records differ)", f"{len(self.changed)}"),
            ("  of which verdict differs", f"{len(self.verdict_changed)}"),
            ("duplicates (identical)", f"{self.duplicates}"),
            ("  before any crash", f"{self.before_any_crash}"),
            ("  max per crash", f"{self.max_duplicates_per_crash}"),
            ("slowest restart to a decision (s)", self._slowest_restart()),
            (
                f"  bound, rate x ({c.snapshot_interval:g} + {margin:g}) s",
                f"{self.duplicate_bound(margin):.0f}",
            ),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value:>8}" for name, value in rows]
        lines.append("")
        lines.append(
            f"{'crash':>5} {'uptime s':>8} {'1st decision s':>14} {'sent':>7} {'decided':>8} "
            f"{'published':>9} {'dups':>6} {'changed':>7}"
        )
        for crash in self.crashes:
            t = crash.first_decision
            first = "-" if t is None else f"{t:.1f}"
            lines.append(
                f"{crash.number:>5} {crash.uptime:>8.1f} {first:>14} {crash.sent:>7} "
                f"{crash.decided:>8} {crash.published:>9} {crash.duplicates:>6} {crash.changed:>7}"
            )
        lines.extend(self.examples[:5])
        return "\n".join(lines)


class StreamProducer(threading.Thread):
    """Sends simulated transactions at ``rate`` per second until stopped."""

    def __init__(self, settings: Settings, config: CampaignConfig) -> None:
        super().__init__(name="campaign-producer", daemon=True)
        self.settings = settings
        self.config = config
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.delivered: list[Identity] = []
        self.failures: list[str] = []
        self.error: BaseException | None = None

    @property
    def sent(self) -> int:
        with self.lock:
            return len(self.delivered)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.failures.append(str(error))
            return
        body = json.loads(message.value() or b"{}")
        with self.lock:
            self.delivered.append((body["card_id"], body["transaction_id"]))

    def run(self) -> None:
        try:
            self._run()
        except BaseException as error:  # reported by stop()
            self.error = error

    def _run(self) -> None:
        config = self.config
        producer = Producer(
            {
                "bootstrap.servers": self.settings.kafka.bootstrap_servers,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
            }
        )
        topic = self.settings.kafka.topic_transactions
        stream = simulate(
            SimulationConfig(
                n_customers=config.customers, n_terminals=config.terminals, seed=config.seed
            )
        )
        started = time.monotonic()
        count = 0
        while not self.stopping.is_set():
            due = int((time.monotonic() - started) * config.rate)
            while count < due:
                tx = next(stream).transaction
                producer.produce(
                    topic,
                    key=tx.card_id.encode(),
                    value=tx.model_dump_json().encode(),
                    on_delivery=self._on_delivery,
                )
                count += 1
            producer.poll(0)
            time.sleep(0.005)
        left = producer.flush(60)
        if left:
            self.failures.append(f"{left} transactions still queued at the end")

    def stop(self) -> list[Identity]:
        self.stopping.set()
        self.join(90)
        if self.error is not None:
            raise RuntimeError("the campaign's producer failed") from self.error
        if self.failures:
            raise RuntimeError(f"transactions not delivered: {self.failures[:3]}")
        with self.lock:
            return list(self.delivered)


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"campaign-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """Each partition's end (high watermark) offset."""
    consumer = _consumer(settings)
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def read_topic(settings: Settings, topic: str) -> list[tuple[int, int, bytes]]:
    """Every record on ``topic`` now, as (partition, offset, value)."""
    consumer = _consumer(settings)
    out: list[tuple[int, int, bytes]] = []
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, p, low)])
            while True:
                msg = consumer.poll(10)
                if msg is None:
                    raise RuntimeError(f"{topic}[{p}] ended before offset {high}")
                if msg.error() is not None:
                    raise RuntimeError(str(msg.error()))
                offset = msg.offset()
                assert offset is not None
                out.append((p, offset, msg.value() or b""))
                if offset >= high - 1:
                    break
    finally:
        consumer.close()
    return out


class ArrivalClock(threading.Thread):
    """Notes when each decision record arrives, to time a restarted process."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="campaign-clock", daemon=True)
        topic = settings.kafka.topic_decisions
        self.consumer = _consumer(settings)
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        self.stopping = threading.Event()
        self.arrivals: list[tuple[float, int, int]] = []  # (monotonic, partition, offset)

    def run(self) -> None:
        while not self.stopping.is_set():
            for msg in self.consumer.consume(5000, timeout=0.2):
                partition, offset = msg.partition(), msg.offset()
                if msg.error() is None and partition is not None and offset is not None:
                    self.arrivals.append((time.monotonic(), partition, offset))
        self.consumer.close()

    def first_after(self, start: dict[int, int], end: dict[int, int] | None) -> float | None:
        """When the first record at or past ``start`` (and before ``end``) arrived."""
        times = [
            t
            for t, p, o in self.arrivals
            if o >= start.get(p, 0) and (end is None or o < end.get(p, 0))
        ]
        return min(times, default=None)


class DecisionWatcher:
    """Follows the decision topic from its start: which transactions have a decision."""

    def __init__(self, settings: Settings) -> None:
        topic = settings.kafka.topic_decisions
        self.consumer = _consumer(settings)
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        self.decided: set[Identity] = set()

    def update(self, seconds: float = 1.0) -> set[Identity]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            batch = self.consumer.consume(5000, timeout=0.2)
            for msg in batch:
                if msg.error() is not None:
                    continue
                body = json.loads(msg.value() or b"{}")
                self.decided.add((body["card_id"], body["transaction_id"]))
            if not batch:
                break
        return self.decided

    def close(self) -> None:
        self.consumer.close()


VERDICT = ("decision", "score", "reasons")


def analyse(
    config: CampaignConfig,
    sent: list[Identity],
    records: list[tuple[int, int, bytes]],
    crashes: list[Crash],
    boundaries: list[dict[int, int]],
    seconds: float,
) -> CampaignResult:
    """The campaign's figures from the decision records and the offsets at each kill."""
    by_tx: dict[Identity, list[tuple[int, int, bytes]]] = defaultdict(list)
    for partition, offset, value in sorted(records):
        body = json.loads(value)
        by_tx[(body["card_id"], body["transaction_id"])].append((partition, offset, value))

    def run_of(partition: int, offset: int) -> int:
        """0 for the first process, k for the one started after the k-th kill."""
        return sum(1 for b in boundaries if b.get(partition, 0) <= offset)

    changed: list[Identity] = []
    verdict_changed: list[Identity] = []
    duplicates = 0
    before_any_crash = 0
    examples: list[str] = []
    for identity, versions in by_tx.items():
        first = versions[0][2]
        first_body = json.loads(first)
        differs = False
        for partition, offset, value in versions[1:]:
            run = run_of(partition, offset)
            if value == first:
                duplicates += 1
                if run == 0:
                    before_any_crash += 1
                else:
                    crashes[run - 1].duplicates += 1
                continue
            differs = True
            if run > 0:
                crashes[run - 1].changed += 1
            body = json.loads(value)
            if any(body.get(k) != first_body.get(k) for k in VERDICT):
                verdict_changed.append(identity)
            if len(examples) < 5:
                was = run_of(versions[0][0], versions[0][1])
                examples.append(
                    f"changed {identity}, published by process {was} at "
                    f"{versions[0][:2]} then by process {run} at {(partition, offset)}:\n"
                    f"  {first!r}\n  {value!r}"
                )
        if differs:
            changed.append(identity)
    decided = set(by_tx)
    lost = [i for i in dict.fromkeys(sent) if i not in decided]
    return CampaignResult(
        config=config,
        sent=len(set(sent)),
        records=len(records),
        decided=len(decided),
        lost=lost,
        changed=changed,
        verdict_changed=sorted(set(verdict_changed)),
        duplicates=duplicates,
        before_any_crash=before_any_crash,
        crashes=crashes,
        seconds=seconds,
        examples=examples,
    )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def run_campaign(
    settings: Settings,
    workdir: Path,
    config: CampaignConfig,
    *,
    say: Callable[[str], None] = lambda _: None,
) -> CampaignResult:
    """Crash the detector ``config.kills`` times under a live stream; the figures.

    ``settings`` names the broker and the (new, empty) topics; the detector keeps its
    recovery snapshots and log in ``workdir``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "detector.log"
    env = {
        "FRAUDSTREAM_SNAPSHOT_INTERVAL_SECONDS": f"{config.snapshot_interval:g}",
        "FRAUDSTREAM_LOG_LEVEL": config.log_level,
    }
    rng = random.Random(config.seed)
    crashes: list[Crash] = []
    boundaries: list[dict[int, int]] = []
    started = time.monotonic()

    def start() -> tuple[subprocess.Popen[bytes], float]:
        return detector_process(settings, workdir, log, env), time.monotonic()

    clock = ArrivalClock(settings)
    clock.start()
    producer = StreamProducer(settings, config)
    producer.start()
    proc, since = start()
    spawned = [since]
    try:
        for number in range(1, config.kills + 1):
            deadline = since + rng.uniform(config.min_interval, config.max_interval)
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"the detector exited by itself ({proc.returncode}) before kill "
                        f"{number}\n{log.read_text()[-3000:]}"
                    )
                time.sleep(0.05)
            uptime = time.monotonic() - since
            _kill(proc)
            time.sleep(0.3)  # let requests already on the wire land
            ends = end_offsets(settings, settings.kafka.topic_decisions)
            boundaries.append(ends)
            before = sum(boundaries[-2].values()) if len(boundaries) > 1 else 0
            crash = Crash(
                number, uptime, producer.sent, sum(ends.values()), sum(ends.values()) - before
            )
            crashes.append(crash)
            say(f"kill {number}: after {uptime:.1f} s, {crash.sent} sent, {crash.decided} decided")
            proc, since = start()
            spawned.append(since)
        # The last process runs a while under the stream, then drains it.
        time.sleep(rng.uniform(config.min_interval, config.max_interval))
        sent = producer.stop()
        say(f"stream stopped: {len(sent)} sent; waiting for every decision")
        wanted = set(sent)
        watcher = DecisionWatcher(settings)
        try:
            deadline = time.monotonic() + config.settle_timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"the detector exited by itself ({proc.returncode}) while draining\n"
                        f"{log.read_text()[-3000:]}"
                    )
                if wanted <= watcher.update() or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        finally:
            watcher.close()
        time.sleep(2)  # anything published twice at the end shows up too
    finally:
        producer.stopping.set()
        clock.stopping.set()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                _kill(proc)
    clock.join(10)
    for k, crash in enumerate(crashes):
        first = clock.first_after(boundaries[k - 1] if k else {}, boundaries[k])
        crash.first_decision = None if first is None else first - spawned[k]
    records = read_topic(settings, settings.kafka.topic_decisions)
    return analyse(config, sent, records, crashes, boundaries, time.monotonic() - started)


# --- as a script, with a broker of its own -------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.integration.campaign",
        description="Kill the detector with SIGKILL under a live stream; count what was "
        "lost, changed and published twice.",
    )
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--rate", type=float, default=500.0, help="transactions per second")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-interval", type=float, default=1.0)
    parser.add_argument("--max-interval", type=float, default=10.0)
    parser.add_argument("--snapshot-interval", type=float, default=1.0)
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN_SECONDS)
    parser.add_argument("--settle-timeout", type=float, default=300.0)
    parser.add_argument(
        "--bootstrap-servers", help="use this broker instead of starting a local one"
    )
    parser.add_argument("--workdir", type=Path, help="keep logs and snapshots here")
    parser.add_argument("--log-level", default="WARNING", help="the detector's log level")
    args = parser.parse_args(argv)
    config = CampaignConfig(
        kills=args.kills,
        rate=args.rate,
        seed=args.seed,
        min_interval=args.min_interval,
        max_interval=args.max_interval,
        snapshot_interval=args.snapshot_interval,
        settle_timeout=args.settle_timeout,
        log_level=args.log_level,
    )
    with tempfile.TemporaryDirectory(prefix="fraudstream-campaign-") as scratch:
        workdir = args.workdir or Path(scratch)
        broker: LocalBroker | None = None
        if args.bootstrap_servers:
            bootstrap = args.bootstrap_servers
        else:
            port, controller_port = find_free_ports(2)
            broker = LocalBroker(
                workdir / "broker", port=port, controller_port=controller_port, libs_dir=JARS_CACHE
            )
            print(f"starting a local broker on {broker.bootstrap}", flush=True)
            broker.start(wait=120)
            bootstrap = broker.bootstrap
        try:
            suffix = uuid.uuid4().hex[:8]
            base = Settings(
                kafka=KafkaSettings(bootstrap_servers=bootstrap), local=LocalSettings(home=workdir)
            )
            topics = {
                name: f"{getattr(base.kafka, name)}-campaign-{suffix}"
                for name in KafkaSettings.model_fields
                if name.startswith("topic_") and isinstance(getattr(base.kafka, name), str)
            }
            settings = base.model_copy(update={"kafka": base.kafka.model_copy(update=topics)})
            create_topics(settings)
            result = run_campaign(
                settings, workdir / "detector", config, say=lambda s: print(s, flush=True)
            )
        finally:
            if broker is not None:
                broker.stop()
    print()
    print(result.table(args.margin))
    ok = (
        not result.lost
        and not result.changed
        and result.max_duplicates_per_crash <= result.duplicate_bound(args.margin)
    )
    print("\nOK" if ok else "\nFAILED: lost, changed, or too many duplicates per crash")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
