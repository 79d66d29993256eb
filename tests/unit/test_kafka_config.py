"""Kafka client and topic configuration: durable producers, structured and rate-limited
client logs, one event per loss and return of the cluster, min.insync.replicas."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient
from structlog.testing import CapturingLogger

from detector import kafka_config
from detector.kafka_config import (
    KafkaDeliveryError,
    admin_config,
    consumer_config,
    producer_config,
)
from detector.local.logs import RateLimiter
from detector.local.topics import min_insync_replicas, new_topics, topic_config
from detector.settings import KafkaSettings, Settings

SASL = {
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanism": "PLAIN",
    "sasl.username": "fraudstream",
    "sasl.password": "secret",
}


def settings(**extra: str) -> Settings:
    # Port 9 (discard): nothing listens, and the clients built here never poll.
    return Settings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:9, 127.0.0.2:9", kafka_extra_config=extra)
    )


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> CapturingLogger:
    """What kafka_config logs, as (method, args, kwargs) calls."""
    capture = CapturingLogger()
    monkeypatch.setattr(kafka_config, "log", capture)
    return capture


def named(capture: CapturingLogger, event: str) -> list[dict[str, Any]]:
    found = []
    for call in capture.calls:
        args = call.args[1:] if call.method_name == "log" else call.args
        if args and args[0] == event:
            found.append(call.kwargs)
    return found


# --- producers -------------------------------------------------------------------------


def test_producers_are_idempotent_wait_for_all_replicas_and_log_structured() -> None:
    config = producer_config(settings())
    assert config["bootstrap.servers"] == "127.0.0.1:9,127.0.0.2:9"
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert config["linger.ms"] == kafka_config.LINGER_MS
    assert isinstance(config["logger"], logging.Logger)
    assert callable(config["error_cb"]) and callable(config["on_delivery"])
    Producer(config).flush(0)  # librdkafka takes every property


def test_the_extra_config_goes_on_top() -> None:
    config = producer_config(settings(**SASL, **{"linger.ms": "50", "acks": "-1"}))
    assert {key: config[key] for key in SASL} == SASL
    assert (config["linger.ms"], config["acks"]) == ("50", "-1")
    assert config["enable.idempotence"] is True
    Producer(config).flush(0)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("acks", "1"),
        ("acks", "0"),
        ("request.required.acks", "1"),
        ("enable.idempotence", "false"),
        ("enable.idempotence", "0"),
    ],
)
def test_the_extra_config_cannot_weaken_durability(key: str, value: str) -> None:
    with pytest.raises(ValueError, match="FRAUDSTREAM_KAFKA_EXTRA_CONFIG") as caught:
        producer_config(settings(**{key: value}))
    assert f"{key}={value}" in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [("acks", "all"), ("acks", "ALL"), ("acks", "-1"), ("enable.idempotence", "true")],
)
def test_the_extra_config_may_repeat_the_durable_settings(key: str, value: str) -> None:
    assert producer_config(settings(**{key: value}))[key] == value


def test_an_undelivered_record_raises_from_the_default_delivery_report() -> None:
    class Undelivered:
        def topic(self) -> str:
            return "decisions"

        def partition(self) -> int:
            return 2

    report = producer_config(settings())["on_delivery"]
    report(None, Undelivered())  # delivered: nothing to say
    error = KafkaError(KafkaError.NOT_ENOUGH_REPLICAS, "Broker: Not enough in-sync replicas")
    with pytest.raises(KafkaDeliveryError, match=r"decisions \[2\].*NOT_ENOUGH_REPLICAS"):
        report(error, Undelivered())


# --- consumers and admin clients -------------------------------------------------------


def test_consumers_take_the_extra_config_then_the_overrides() -> None:
    config = consumer_config(settings(**SASL), **{"group.id": "g", "auto.offset.reset": "earliest"})
    assert config["bootstrap.servers"] == "127.0.0.1:9,127.0.0.2:9"
    assert {key: config[key] for key in SASL} == SASL
    assert (config["group.id"], config["auto.offset.reset"]) == ("g", "earliest")
    assert isinstance(config["logger"], logging.Logger) and callable(config["error_cb"])
    Consumer(config).close()


def test_admin_clients_take_the_extra_config() -> None:
    config = admin_config(settings(**SASL))
    assert {key: config[key] for key in SASL} == SASL
    assert isinstance(config["logger"], logging.Logger) and callable(config["error_cb"])
    AdminClient(config)


def test_every_client_shares_one_logger_and_one_watch() -> None:
    configs = [producer_config(settings()), consumer_config(settings()), admin_config(settings())]
    assert len({id(c["logger"]) for c in configs}) == 1
    assert len({c["error_cb"].__self__ for c in configs}) == 1
    assert len(configs[0]["logger"].handlers) == 1
    assert configs[0]["logger"].propagate is False


# --- librdkafka's log lines ------------------------------------------------------------


def librdkafka_record(level: int, facility: str, text: str) -> logging.LogRecord:
    # The shape confluent-kafka gives its logger.
    return logging.LogRecord(
        "k", level, __file__, 0, "%s [%s] %s", (facility, "rdkafka#consumer-1", text), None
    )


def test_client_log_lines_are_structured_and_rate_limited_per_kind(
    events: CapturingLogger,
) -> None:
    clock = [0.0]
    handler = kafka_config._StructuredHandler(RateLimiter(2, 60.0, clock=lambda: clock[0]))
    text = "[thrd:127.0.0.1:9092/bootstrap]: 127.0.0.1:9092/bootstrap: Connect failed"
    for _ in range(100):
        handler.emit(librdkafka_record(logging.ERROR, "FAIL", text))
    handler.emit(librdkafka_record(logging.WARNING, "FAIL", "Disconnected"))
    handler.emit(librdkafka_record(logging.ERROR, "GETPID", "no PID"))
    lines = named(events, "kafka client log")
    assert len(lines) == 4
    assert lines[0] == {
        "message": "127.0.0.1:9092/bootstrap: Connect failed",
        "facility": "FAIL",
        "client": "rdkafka#consumer-1",
    }
    assert events.calls[0].args[0] == logging.ERROR

    clock[0] = 61.0
    handler.emit(librdkafka_record(logging.ERROR, "FAIL", text))
    assert named(events, "kafka client log")[-1]["held_back"] == 98


def test_debug_lines_are_never_held_back(events: CapturingLogger) -> None:
    handler = kafka_config._StructuredHandler(RateLimiter(1, 60.0))
    for _ in range(20):
        handler.emit(librdkafka_record(logging.DEBUG, "BROKER", "state change"))
    assert len(named(events, "kafka client log")) == 20


def test_rate_limiter_windows() -> None:
    clock = [0.0]
    limiter = RateLimiter(3, 10.0, clock=lambda: clock[0])
    assert [limiter.allow("a") for _ in range(5)] == [(True, 0)] * 3 + [(False, 0)] * 2
    assert limiter.allow("b") == (True, 0)
    clock[0] = 9.9
    assert limiter.allow("a") == (False, 0)
    clock[0] = 10.0
    assert limiter.allow("a") == (True, 3)
    assert limiter.allow("a") == (True, 0)
    with pytest.raises(ValueError):
        RateLimiter(0, 1.0)


# --- the connection watch --------------------------------------------------------------

ALL_DOWN = KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down")
TRANSPORT = KafkaError(KafkaError._TRANSPORT, "127.0.0.1:9092/1: Connection refused")


class Cluster:
    """A fake cluster the watch probes: reachable or not, answering or not."""

    def __init__(self) -> None:
        self.up = True
        self.answers = True  # to a metadata request, when up
        self.probes = 0
        self.checks: list[Mapping[str, Any]] = []

    def probe(self, brokers: Sequence[str]) -> bool:
        self.probes += 1
        return self.up

    def check(self, config: Mapping[str, Any]) -> bool:
        self.checks.append(config)
        return self.up and self.answers


def new_watch(cluster: Cluster, clock: Callable[[], float] = time.monotonic) -> Any:
    return kafka_config._ConnectionWatch(
        ["127.0.0.1:9092"],
        {"bootstrap.servers": "127.0.0.1:9092", **SASL},
        probe=cluster.probe,
        check=cluster.check,
        recheck=0.01,
        clock=clock,
    )


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_one_lost_and_one_back_per_outage(events: CapturingLogger) -> None:
    cluster = Cluster()
    watch = new_watch(cluster)

    cluster.up = False
    for _ in range(50):
        watch.on_error(TRANSPORT)
        watch.on_error(ALL_DOWN)
    [lost] = named(events, "kafka broker lost")
    assert lost["bootstrap"] == "127.0.0.1:9092"
    assert watch.lost
    time.sleep(0.1)
    assert named(events, "kafka broker back") == []

    cluster.up = True
    wait_for(lambda: not watch.lost)
    [back] = named(events, "kafka broker back")
    assert back["connection_errors"] == 100
    assert back["down_seconds"] >= 0.1
    # The recheck asked with the clients' settings, credentials included.
    assert cluster.checks[-1]["sasl.username"] == "fraudstream"

    time.sleep(0.05)
    assert len(named(events, "kafka broker back")) == 1  # the recheck thread has ended


def test_a_report_served_after_the_cluster_is_back_is_no_outage(
    events: CapturingLogger,
) -> None:
    cluster = Cluster()
    watch = new_watch(cluster)
    # An idle producer serves, long after, the errors of an outage already over.
    watch.on_error(ALL_DOWN)
    watch.on_error(TRANSPORT)
    assert not watch.lost
    assert named(events, "kafka broker lost") == []


def test_probes_are_spared_while_the_cluster_answers(events: CapturingLogger) -> None:
    cluster = Cluster()
    now = [100.0]
    watch = new_watch(cluster, clock=lambda: now[0])
    for _ in range(100):  # one broker of several keeps failing
        watch.on_error(TRANSPORT)
    assert cluster.probes == 1
    now[0] += kafka_config.PROBE_REACHABLE_SECONDS
    watch.on_error(TRANSPORT)
    assert cluster.probes == 2


def test_a_second_outage_is_announced_again(events: CapturingLogger) -> None:
    cluster = Cluster()
    watch = new_watch(cluster)
    for _ in range(2):
        cluster.up = False
        watch.on_error(ALL_DOWN)
        assert watch.lost
        cluster.up = True
        wait_for(lambda: not watch.lost)
        time.sleep(kafka_config.PROBE_UNREACHABLE_SECONDS)  # the probe's answer expires
    assert len(named(events, "kafka broker lost")) == 2
    assert len(named(events, "kafka broker back")) == 2


def test_reachable_but_not_answering_is_still_lost(events: CapturingLogger) -> None:
    cluster = Cluster()
    watch = new_watch(cluster)
    cluster.up, cluster.answers = False, False
    watch.on_error(ALL_DOWN)
    cluster.up = True  # the port is open, but the broker does not answer (or refuses us)
    time.sleep(0.1)
    assert watch.recheck() is False
    assert watch.lost
    assert named(events, "kafka broker back") == []
    cluster.answers = True
    wait_for(lambda: not watch.lost)


def test_other_client_errors_are_logged_rate_limited(events: CapturingLogger) -> None:
    watch = new_watch(Cluster())
    auth = KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: bad password")
    for _ in range(10):
        watch.on_error(auth)
    logged = named(events, "kafka client error")
    assert len(logged) == kafka_config.LOG_LINES_PER_KIND
    assert logged[0]["code"] == "_AUTHENTICATION" and logged[0]["fatal"] is False
    assert not watch.lost


def test_callbacks_from_many_threads_still_make_one_event(events: CapturingLogger) -> None:
    cluster = Cluster()
    cluster.up = False
    watch = new_watch(cluster)
    threads = [
        threading.Thread(target=lambda: [watch.on_error(ALL_DOWN) for _ in range(200)])
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(named(events, "kafka broker lost")) == 1
    cluster.up = True
    wait_for(lambda: not watch.lost)
    assert len(named(events, "kafka broker back")) == 1


def test_reachable_any_tries_every_broker() -> None:
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert kafka_config._reachable_any(["127.0.0.1:9", f"127.0.0.1:{port}"])
        assert kafka_config._reachable_any([f"[::1]:{port}", f"localhost:{port}"])
    assert not kafka_config._reachable_any(["127.0.0.1:9", "no-port"])


# --- topics ----------------------------------------------------------------------------


@pytest.mark.parametrize(("factor", "expected"), [(1, 1), (2, 1), (3, 2), (4, 2), (5, 2)])
def test_min_insync_replicas_is_two_from_three_replicas_on(factor: int, expected: int) -> None:
    assert min_insync_replicas(factor) == expected
    assert topic_config(factor) == {"min.insync.replicas": str(expected)}


def test_min_insync_replicas_needs_a_replica() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        min_insync_replicas(0)


def test_created_topics_carry_the_replication_factor_and_min_insync_replicas() -> None:
    production = Settings(kafka=KafkaSettings(topic_replication_factor=3))
    topics = new_topics(production, ["transactions", "decisions"], partitions=6)
    assert [t.topic for t in topics] == ["transactions", "decisions"]
    for topic in topics:
        assert (topic.num_partitions, topic.replication_factor) == (6, 3)
        assert topic.config == {"min.insync.replicas": "2"}
    [local] = new_topics(Settings(), ["alerts"], partitions=3)
    assert (local.replication_factor, local.config) == (1, {"min.insync.replicas": "1"})
