"""server.properties generation, cluster ids and pid-file handling of the local broker."""

from __future__ import annotations

import base64
import os
import socket
import time
from pathlib import Path

import pytest

from detector.local.broker import LocalBroker
from detector.local.broker_config import (
    BrokerError,
    SaslListener,
    find_free_ports,
    is_valid_cluster_id,
    new_cluster_id,
    render_properties,
    server_properties,
)
from detector.settings import KafkaSettings, LocalSettings, Settings


def parse_properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {key: value for key, value in pairs}


def test_server_properties_single_node_kraft(tmp_path: Path) -> None:
    props = server_properties(
        host="127.0.0.1", port=19092, controller_port=19093, data_dir=tmp_path / "data"
    )
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["auto.create.topics.enable"] == "false"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "offsets.topic.num.partitions",
        "transaction.state.log.num.partitions",
        "num.partitions",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_render_properties_round_trips_and_escapes_backslashes() -> None:
    text = render_properties({"a.b": "x", "log.dirs": r"C:\kafka"})
    assert text.startswith("#") and text.endswith("\n")
    assert parse_properties(text) == {"a.b": "x", "log.dirs": r"C:\\kafka"}


def test_broker_writes_its_paths_into_server_properties(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path, port=29092, controller_port=29093)
    props = parse_properties(broker.render_server_properties())
    assert props["log.dirs"] == str(tmp_path / "kafka" / "data")
    assert props["listeners"].startswith("PLAINTEXT://127.0.0.1:29092,")
    assert broker.bootstrap == "127.0.0.1:29092"
    assert broker.libs_dir == tmp_path / "kafka" / "libs"
    assert broker.log_file == tmp_path / "kafka" / "logs" / "server.log"


def test_same_port_twice_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="differ"):
        LocalBroker(tmp_path, port=9092, controller_port=9092)
    with pytest.raises(ValueError, match="differ"):
        LocalBroker(tmp_path, port=9092, controller_port=9093, sasl=SaslListener(9093, "u", "p"))


def test_no_sasl_listener_by_default(tmp_path: Path) -> None:
    props = parse_properties(LocalBroker(tmp_path).render_server_properties())
    assert "SASL" not in props["listeners"]
    assert not [key for key in props if "sasl" in key]
    with pytest.raises(BrokerError, match="no SASL listener"):
        _ = LocalBroker(tmp_path).sasl_bootstrap


def test_sasl_listener_with_plain_and_one_user(tmp_path: Path) -> None:
    sasl = SaslListener(29094, "alice", "s3cret-pw")
    broker = LocalBroker(tmp_path, port=29092, controller_port=29093, sasl=sasl)
    props = parse_properties(broker.render_server_properties())
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093,SASL_PLAINTEXT://127.0.0.1:29094"
    )
    assert props["advertised.listeners"] == (
        "PLAINTEXT://127.0.0.1:29092,SASL_PLAINTEXT://127.0.0.1:29094"
    )
    assert props["listener.security.protocol.map"] == (
        "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"
    )
    # The broker's own traffic stays on PLAINTEXT.
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["sasl.enabled.mechanisms"] == "PLAIN"
    assert props["listener.name.sasl_plaintext.plain.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        'username="alice" password="s3cret-pw" user_alice="s3cret-pw";'
    )
    assert broker.sasl_bootstrap == "127.0.0.1:29094"
    assert sasl.client_config() == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "alice",
        "sasl.password": "s3cret-pw",
    }


@pytest.mark.parametrize(
    ("username", "password"),
    [("", "pw"), ("a b", "pw"), ('a"', "pw"), ("a=b", "pw"), ("u", ""), ("u", 'p"w'),
     ("u", "p w"), ("u", "p\\w"), ("u", "pé")],
)  # fmt: skip
def test_sasl_credentials_that_would_break_the_jaas_line_are_refused(
    username: str, password: str
) -> None:
    with pytest.raises(ValueError, match="SASL"):
        SaslListener(29094, username, password)


@pytest.mark.parametrize("_", range(200))
def test_new_cluster_id_format(_: int) -> None:
    cluster_id = new_cluster_id()
    assert len(cluster_id) == 22
    assert not cluster_id.startswith("-")
    assert is_valid_cluster_id(cluster_id)
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_is_valid_cluster_id_rejects_bad_ids() -> None:
    assert not is_valid_cluster_id("-" + "a" * 21)
    assert not is_valid_cluster_id("a" * 21)
    assert not is_valid_cluster_id("a" * 21 + "+")


def test_cluster_id_is_kept_in_the_home(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path)
    first = broker.cluster_id()
    assert broker.cluster_id_file.read_text().strip() == first
    assert LocalBroker(tmp_path).cluster_id() == first


def test_from_settings_takes_a_local_port(tmp_path: Path) -> None:
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers="localhost:19092,127.0.0.1:29092"),
        local=LocalSettings(home=tmp_path, kafka_version="3.8.0", kafka_heap="1g"),
    )
    broker = LocalBroker.from_settings(settings)
    assert (broker.host, broker.port, broker.controller_port) == ("127.0.0.1", 19092, 19093)
    assert (broker.version, broker.heap, broker.home) == ("3.8.0", "1g", tmp_path)


def test_from_settings_ignores_a_remote_broker(tmp_path: Path) -> None:
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers="kafka.example.com:9094"),
        local=LocalSettings(home=tmp_path),
    )
    assert LocalBroker.from_settings(settings).port == 9092


def test_stop_without_pid_file(tmp_path: Path) -> None:
    assert LocalBroker(tmp_path).stop() is False


@pytest.mark.parametrize("content", ["", "garbage", "0", "1", "999999999"])
def test_stop_removes_a_stale_pid_file(tmp_path: Path, content: str) -> None:
    broker = LocalBroker(tmp_path)
    broker.pid_file.parent.mkdir(parents=True)
    broker.pid_file.write_text(content)
    assert broker.managed_pid() is None
    assert broker.stop() is False
    assert not broker.pid_file.exists()


def test_stop_never_signals_a_reused_pid(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path)
    broker.pid_file.parent.mkdir(parents=True)
    # This pytest process is alive but not a Kafka broker: it must survive.
    broker.pid_file.write_text(f"{os.getpid()}\n")
    assert broker.managed_pid() is None
    assert broker.stop() is False
    assert not broker.pid_file.exists()


def test_unreachable_broker_reports_quickly(tmp_path: Path) -> None:
    (port,) = find_free_ports(1)
    broker = LocalBroker(tmp_path, port=port, controller_port=port + 1)
    started = time.monotonic()
    assert broker.is_reachable(timeout=5) is False
    # A refused connection must not cost the whole timeout.
    assert time.monotonic() - started < 2
    status = broker.status()
    assert not status.reachable and status.pid is None and not status.managed


def test_start_refuses_a_port_held_by_another_program(tmp_path: Path) -> None:
    port, controller_port = find_free_ports(2)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", controller_port))
        holder.listen()
        broker = LocalBroker(tmp_path, port=port, controller_port=controller_port)
        with pytest.raises(BrokerError, match=f"127.0.0.1:{controller_port}"):
            broker.start(wait=1)
