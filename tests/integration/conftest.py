"""Fixtures for tests against a real Apache Kafka broker.

One broker is started per session from the jars cached in ``<repo>/.fraudstream/kafka/libs``
(shared with development), on free ports, in a temporary home. Set
``FRAUDSTREAM_TEST_BOOTSTRAP_SERVERS`` to run against an existing broker instead.
"""

from __future__ import annotations

import os
import secrets
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from detector.local.broker import LocalBroker
from detector.local.broker_config import SaslListener, find_free_ports
from detector.local.topics import create_topics, wait_for_broker
from detector.settings import KafkaSettings, LocalSettings, Settings

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
JARS_CACHE = REPO / ".fraudstream" / "kafka" / "libs"
EXTERNAL_ENV = "FRAUDSTREAM_TEST_BOOTSTRAP_SERVERS"
# Every topic name field (topic_partitions etc. are numbers), so new topics are included.
TOPIC_FIELDS = tuple(
    name
    for name, field in KafkaSettings.model_fields.items()
    if name.startswith("topic_") and field.annotation is str
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Hooks of a conftest see every collected item, not only those in its folder.
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


def local_broker(home: Path) -> LocalBroker:
    """A broker in ``home`` on two free ports, sharing the repo's jars cache."""
    port, controller_port = find_free_ports(2)
    return LocalBroker(home, port=port, controller_port=controller_port, libs_dir=JARS_CACHE)


def require_broker_tools(broker: LocalBroker) -> None:
    """Skip (fail on CI) when Java, or Maven for a first fetch, is missing."""
    missing = [] if shutil.which("java") else ["java"]
    if not broker.jars_ready() and not shutil.which("mvn"):
        missing.append("mvn")
    if not missing:
        return
    message = (
        f"{' and '.join(missing)} not found on PATH: the integration tests run a real Kafka "
        f"broker from its jars (or set {EXTERNAL_ENV} to use a running broker)"
    )
    # On CI a missing tool is a broken setup, unless the CI provides its own broker.
    if os.environ.get("CI") and not os.environ.get(EXTERNAL_ENV):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def running(broker: LocalBroker) -> Iterator[LocalBroker]:
    """``broker``, started for a fixture and stopped after it (skipped when an external
    broker is configured, or when Java or Maven is missing)."""
    if os.environ.get(EXTERNAL_ENV):
        pytest.skip(f"{EXTERNAL_ENV} is set: tests use that broker, not a local one")
    require_broker_tools(broker)
    broker.start(wait=120)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """The session's local broker."""
    yield from running(local_broker(tmp_path_factory.mktemp("kafka-session")))


@pytest.fixture(scope="session")
def kafka_settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Settings pointing at the session's broker, with a temporary home."""
    external = os.environ.get(EXTERNAL_ENV)
    if external:
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=external),
            local=LocalSettings(home=tmp_path_factory.mktemp("home")),
        )
        wait_for_broker(settings, timeout=30)
        return settings
    broker: LocalBroker = request.getfixturevalue("kafka_broker")
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=broker.bootstrap),
        local=LocalSettings(home=broker.home),
    )


@pytest.fixture
def local_broker_factory() -> Callable[[Path], LocalBroker]:
    """Makes brokers on free ports sharing the jars cache; skips without Java/Maven."""

    def make(home: Path) -> LocalBroker:
        broker = local_broker(home)
        require_broker_tools(broker)
        return broker

    return make


def own_topics(settings: Settings) -> Settings:
    """A copy of ``settings`` whose topic names are new (the topics are not created)."""
    suffix = uuid.uuid4().hex[:10]
    topics = {field: f"{getattr(settings.kafka, field)}-{suffix}" for field in TOPIC_FIELDS}
    return settings.model_copy(update={"kafka": settings.kafka.model_copy(update=topics)})


@pytest.fixture
def unique_topics(kafka_settings: Settings) -> Settings:
    """A copy of ``kafka_settings`` whose topics are new and this test's own."""
    settings = own_topics(kafka_settings)
    create_topics(settings)
    return settings


@pytest.fixture
def own_broker(
    tmp_path: Path, local_broker_factory: Callable[[Path], LocalBroker]
) -> Iterator[LocalBroker]:
    """A started broker of this test alone (it may stop and start it again mid-test)."""
    broker = local_broker_factory(tmp_path / "broker")
    try:
        broker.start(wait=120)
        yield broker
    finally:
        broker.stop(timeout=10)


@pytest.fixture(scope="session")
def jars_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared Kafka jars cache, fetched if needed (for tests that start `up`)."""
    broker = local_broker(tmp_path_factory.mktemp("jars"))
    require_broker_tools(broker)
    return broker.fetch_jars()


def local_sasl_broker(home: Path) -> LocalBroker:
    """A broker in ``home`` that also has a SASL_PLAINTEXT (PLAIN) listener for one user."""
    port, controller_port, sasl_port = find_free_ports(3)
    sasl = SaslListener(sasl_port, "fraudstream", secrets.token_urlsafe(16))
    return LocalBroker(
        home, port=port, controller_port=controller_port, libs_dir=JARS_CACHE, sasl=sasl
    )


@pytest.fixture(scope="session")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A local broker with a SASL listener (``sasl_bootstrap``, ``sasl.client_config()``)."""
    yield from running(local_sasl_broker(tmp_path_factory.mktemp("kafka-sasl")))


def sasl_settings_of(broker: LocalBroker) -> Settings:
    """Settings for ``broker``'s SASL listener, with its credentials and new topic names."""
    assert broker.sasl is not None
    return own_topics(
        Settings(
            kafka=KafkaSettings(
                bootstrap_servers=broker.sasl_bootstrap,
                kafka_extra_config=broker.sasl.client_config(),
            ),
            local=LocalSettings(home=broker.home),
        )
    )
