"""A broker outage as the clients see it: librdkafka's raw lines against the structured,
rate-limited log of ``detector.kafka_config``, and one event when the broker is lost and
one when it is back.

Each client runs in a process of its own (librdkafka writes its raw lines to the
process's stderr, below Python), producing and consuming all along; the test stops the
broker, counts the stderr lines of a few seconds of outage, and starts the broker again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from detector.local.broker import LocalBroker
from detector.local.topics import create_topics
from detector.settings import KafkaSettings, Settings

pytestmark = pytest.mark.slow

OUTAGE_SECONDS = 5.0

# A client that produces a record every 0.1 s and consumes them, until its stop file
# appears. "plain": librdkafka's defaults; "structured": the detector's configs.
CLIENT = """
import sys, time, uuid
from pathlib import Path
from confluent_kafka import Consumer, Producer

mode, bootstrap, topic, stop = sys.argv[1:]
group = {"group.id": f"outage-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
if mode == "plain":
    producer = Producer({"bootstrap.servers": bootstrap})
    consumer = Consumer({"bootstrap.servers": bootstrap, **group})
else:
    from detector.kafka_config import consumer_config, producer_config
    from detector.local.logs import configure_logging
    from detector.settings import KafkaSettings, Settings

    configure_logging("INFO", "json")
    settings = Settings(kafka=KafkaSettings(bootstrap_servers=bootstrap))
    producer = Producer(producer_config(settings))
    consumer = Consumer(consumer_config(settings, **group))
consumer.subscribe([topic])
ignore = lambda error, message: None  # undelivered records are no concern here
received = 0
next_send = 0.0
while not Path(stop).exists():
    if time.monotonic() >= next_send:
        producer.produce(topic, b"x", on_delivery=ignore)
        next_send = time.monotonic() + 0.1
    producer.poll(0)
    message = consumer.poll(0.05)
    if message is not None and message.error() is None:
        received += 1
        if received == 1:
            print("consuming", flush=True)
consumer.close()
"""


class Client:
    """One client process; its stderr goes to a file whose lines are counted."""

    def __init__(self, mode: str, bootstrap: str, topic: str, folder: Path) -> None:
        self.mode = mode
        self.stop_file = folder / f"{mode}.stop"
        self.out = folder / f"{mode}.out"
        self.err = folder / f"{mode}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-c", CLIENT, mode, bootstrap, topic, str(self.stop_file)],
                stdout=out,
                stderr=err,
            )

    def lines(self) -> list[str]:
        return self.err.read_text(errors="replace").splitlines()

    def events(self, event: str) -> list[dict[str, object]]:
        found = []
        for line in self.lines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == event:
                    found.append(record)
        return found

    def wait_consuming(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while "consuming" not in self.out.read_text():
            assert self.process.poll() is None, self.err.read_text()[-3000:]
            assert time.monotonic() < deadline, f"{self.mode} client never consumed"
            time.sleep(0.1)

    def stop(self) -> None:
        self.stop_file.touch()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def test_an_outage_logs_one_lost_one_back_and_a_few_lines_instead_of_a_flood(
    own_broker: LocalBroker, tmp_path: Path
) -> None:
    topic = f"outage-{uuid.uuid4().hex[:8]}"
    create_topics(
        Settings(kafka=KafkaSettings(bootstrap_servers=own_broker.bootstrap)), [topic], partitions=1
    )
    clients = [
        Client(mode, own_broker.bootstrap, topic, tmp_path) for mode in ("plain", "structured")
    ]
    plain, structured = clients
    try:
        for client in clients:
            client.wait_consuming()
        before = {client.mode: len(client.lines()) for client in clients}

        assert own_broker.stop(timeout=30)
        time.sleep(OUTAGE_SECONDS)
        during = {client.mode: len(client.lines()) - before[client.mode] for client in clients}
        print(f"\nstderr lines from the broker's stop to {OUTAGE_SECONDS:g} s later: {during}")

        assert len(structured.events("kafka broker lost")) == 1
        assert structured.events("kafka broker back") == []

        own_broker.start(wait=120)
        deadline = time.monotonic() + 60
        while not structured.events("kafka broker back"):
            assert time.monotonic() < deadline, "no 'kafka broker back' within 60 s"
            time.sleep(0.2)
        time.sleep(2)  # late reports of the outage must not announce another one
    finally:
        for client in clients:
            client.stop()

    # librdkafka's defaults: a line per failed connection attempt, several a second
    # (about 10 on a quiet machine, fewer when the machine is busy and attempts back off).
    assert during["plain"] >= 3 * OUTAGE_SECONDS
    assert during["plain"] >= 2 * during["structured"]
    # The detector's configs: a few lines per kind of message, and the one event.
    assert during["structured"] <= 12
    assert len(structured.events("kafka broker lost")) == 1
    [back] = structured.events("kafka broker back")
    assert back["bootstrap"] == own_broker.bootstrap
    assert float(str(back["down_seconds"])) >= OUTAGE_SECONDS
    # Nothing raw: every line of the structured client is a JSON record.
    assert all(line.startswith("{") for line in structured.lines()), structured.lines()[:5]
    assert any(line.startswith("%") for line in plain.lines())
