"""The local broker's life cycle and topic creation against a real Kafka."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import ConfigResource, ConfigSource

from detector.kafka_config import admin_config
from detector.local.broker import LocalBroker
from detector.local.topics import (
    BrokerUnavailableError,
    create_topics,
    min_insync_replicas,
    new_admin,
    wait_for_broker,
)
from detector.settings import KafkaSettings, LocalSettings, Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def own_broker(
    tmp_path: Path, local_broker_factory: Callable[[Path], LocalBroker]
) -> Iterator[LocalBroker]:
    """A broker of this test only, stopped whatever happens."""
    broker = local_broker_factory(tmp_path)
    try:
        yield broker
    finally:
        broker.stop(timeout=10)


def test_start_status_reuse_stop(own_broker: LocalBroker) -> None:
    assert own_broker.start(wait=120) is True

    status = own_broker.status()
    assert status.reachable and status.managed
    assert status.pid is not None and status.pid == own_broker.managed_pid()
    assert status.bootstrap == own_broker.bootstrap
    assert status.log_file.is_file()
    assert (status.data_dir / "meta.properties").is_file()

    # Another handle on the same home and port finds the running broker and reuses it.
    twin = LocalBroker(
        own_broker.home,
        port=own_broker.port,
        controller_port=own_broker.controller_port,
        libs_dir=own_broker.libs_dir,
    )
    assert twin.start() is False
    assert twin.status().pid == status.pid

    assert own_broker.stop() is True
    assert not own_broker.pid_file.exists()
    after = own_broker.status()
    assert not after.reachable and after.pid is None and not after.managed
    assert own_broker.stop() is False


@pytest.mark.slow
def test_restart_keeps_data_and_cluster_id(own_broker: LocalBroker) -> None:
    assert own_broker.start(wait=120)
    cluster_id = own_broker.cluster_id()
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=own_broker.bootstrap),
        local=LocalSettings(home=own_broker.home),
    )
    topic = f"restart-{uuid.uuid4().hex[:8]}"
    assert create_topics(settings, [topic], partitions=2) == {topic: "created"}
    assert own_broker.stop()

    assert own_broker.start(wait=120)
    assert own_broker.cluster_id() == cluster_id
    assert create_topics(settings, [topic], partitions=2) == {topic: "exists"}


def test_create_topics_is_idempotent(kafka_settings: Settings) -> None:
    suffix = uuid.uuid4().hex[:8]
    topics = [f"idem-a-{suffix}", f"idem-b-{suffix}"]

    assert create_topics(kafka_settings, topics, partitions=4) == dict.fromkeys(topics, "created")
    assert create_topics(kafka_settings, topics, partitions=4) == dict.fromkeys(topics, "exists")

    metadata = new_admin({"bootstrap.servers": kafka_settings.kafka.bootstrap_servers}).list_topics(
        timeout=10
    )
    for topic in topics:
        partitions = metadata.topics[topic].partitions
        assert len(partitions) == 4
        assert all(p.leader >= 0 for p in partitions.values())


def test_created_topics_have_their_min_insync_replicas(kafka_settings: Settings) -> None:
    topics = [f"min-isr-{uuid.uuid4().hex[:8]}", f"min-isr-{uuid.uuid4().hex[:8]}"]
    create_topics(kafka_settings, topics, partitions=1)

    admin = new_admin(admin_config(kafka_settings))
    resources = [ConfigResource(ConfigResource.Type.TOPIC, topic) for topic in topics]
    for resource, future in admin.describe_configs(resources).items():
        entry = future.result(timeout=30)["min.insync.replicas"]
        expected = min_insync_replicas(kafka_settings.kafka.topic_replication_factor)
        assert entry.value == str(expected), resource
        # Set on the topic itself, not inherited from the broker's default.
        assert entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, resource


def test_unique_topics_fixture_creates_settings_topics(unique_topics: Settings) -> None:
    assert create_topics(unique_topics) == dict.fromkeys(unique_topics.kafka.topics, "exists")
    metadata = new_admin({"bootstrap.servers": unique_topics.kafka.bootstrap_servers}).list_topics(
        timeout=10
    )
    for topic in unique_topics.kafka.topics:
        assert len(metadata.topics[topic].partitions) == unique_topics.kafka.topic_partitions


def test_wait_for_broker_names_the_servers(tmp_path: Path) -> None:
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"), local=LocalSettings(home=tmp_path)
    )
    with pytest.raises(BrokerUnavailableError, match=r"127\.0\.0\.1:1"):
        wait_for_broker(settings, timeout=1)
