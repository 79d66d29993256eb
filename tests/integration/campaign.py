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
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from detector.local.broker import LocalBroker
from detector.local.broker_config import find_free_ports
from detector.local.topics import create_topics
from detector.replay.simulator import SimulationConfig, simulate
from detector.settings import KafkaSettings, LocalSettings, Settings
from tests.integration.campaign_result import (
    DEFAULT_MARGIN_SECONDS,
    CampaignConfig,
    CampaignResult,
    Crash,
    Identity,
    analyse,
)
from tests.integration.processes import detector_process

REPO = Path(__file__).resolve().parent.parent.parent
JARS_CACHE = REPO / ".fraudstream" / "kafka" / "libs"


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
