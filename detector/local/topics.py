"""Kafka topic administration: wait for a broker and create fraudstream's topics.

Every topic is created with ``min.insync.replicas`` set by ``min_insync_replicas``: with
``acks=all`` producers (``detector.kafka_config``) a record is acknowledged only once that
many replicas have it, so losing a broker never loses an acknowledged record.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from detector.kafka_config import admin_config
from detector.settings import Settings

log = structlog.get_logger(__name__)


class KafkaAdminError(RuntimeError):
    """A Kafka administration step failed."""


class BrokerUnavailableError(KafkaAdminError):
    """No broker answered at the configured bootstrap servers."""


class TopicCreationError(KafkaAdminError):
    """Topics could not be created or did not become ready in time."""


def probe_config(bootstrap_servers: str) -> dict[str, str]:
    """librdkafka settings for quick, silent reachability checks.

    A down broker otherwise makes librdkafka print a connection error to stderr every
    second and back off for up to 10 s before noticing that it came up.
    """
    return {
        "bootstrap.servers": bootstrap_servers,
        "log_level": "0",
        "socket.connection.setup.timeout.ms": "2000",
        "reconnect.backoff.ms": "100",
        "reconnect.backoff.max.ms": "500",
    }


def new_admin(config: Mapping[str, Any]) -> AdminClient:
    """An admin client for a librdkafka configuration (``kafka_config.admin_config``)."""
    return AdminClient(dict(config))


def min_insync_replicas(replication_factor: int) -> int:
    """The ``min.insync.replicas`` of a topic: ``min(2, replication_factor - 1)``, at least 1.

    With ``acks=all``, a write succeeds only while this many replicas are in sync. Two of
    three (production: replication factor 3) means an acknowledged record is on two
    brokers, and one broker can be lost or restarted without stopping writes. Requiring
    every replica would stop writes at the first broker down; a single replica (factor 1
    or 2) is all a small cluster can promise while one of its brokers is down.
    """
    if replication_factor < 1:
        raise ValueError(f"replication factor must be at least 1, got {replication_factor}")
    return max(1, min(2, replication_factor - 1))


def topic_config(replication_factor: int) -> dict[str, str]:
    """Topic-level configuration ``create_topics`` gives every topic it creates."""
    return {"min.insync.replicas": str(min_insync_replicas(replication_factor))}


def new_topics(settings: Settings, names: Iterable[str], partitions: int) -> list[NewTopic]:
    """The topics ``create_topics`` asks the broker for."""
    factor = settings.kafka.topic_replication_factor
    return [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=factor,
            config=topic_config(factor),
        )
        for name in names
    ]


def wait_for_broker(settings: Settings, timeout: float) -> None:
    """Return once a broker answers a metadata request; raise after ``timeout`` seconds."""
    config = {**probe_config(settings.kafka.bootstrap_servers), **settings.kafka.kafka_extra_config}
    admin = new_admin(config)
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            # Short calls so that a broker coming up mid-wait is noticed promptly.
            admin.list_topics(timeout=min(remaining, 2.0))
            return
        except KafkaException as exc:
            last_error = exc
    raise BrokerUnavailableError(
        f"Kafka is not reachable at {settings.kafka.bootstrap_servers} after {timeout:g} s"
        + (f" ({_describe(last_error)})" if last_error else "")
        + "; start one with the local broker or set FRAUDSTREAM_BOOTSTRAP_SERVERS"
    )


def create_topics(
    settings: Settings,
    topics: Sequence[str] | None = None,
    *,
    partitions: int | None = None,
    timeout: float = 30,
) -> dict[str, str]:
    """Create the missing topics and wait until all their partitions have a leader.

    Topics get ``settings.kafka.topic_replication_factor`` replicas and ``topic_config`` (their
    ``min.insync.replicas``). Returns ``{topic: "created" | "exists"}``. Existing topics are
    left as they are.
    """
    names = list(dict.fromkeys(topics if topics is not None else settings.kafka.topics))
    wanted = partitions if partitions is not None else settings.kafka.topic_partitions
    if wanted < 1:
        raise ValueError(f"partitions must be at least 1, got {wanted}")
    deadline = time.monotonic() + timeout
    admin = new_admin(admin_config(settings))

    existing = _list_topics(admin, settings, timeout)
    result = {name: "exists" for name in names if name in existing}
    for name in result:
        if existing[name] != wanted:
            log.warning(
                "topic exists with another partition count",
                topic=name,
                partitions=existing[name],
                requested=wanted,
            )

    missing = [name for name in names if name not in existing]
    if missing:
        result.update(_create(admin, settings, missing, wanted, deadline))
        created = [name for name in missing if result[name] == "created"]
        _wait_until_ready(admin, created, wanted, deadline, settings)
        if created:
            log.info(
                "topics created",
                topics=created,
                partitions=wanted,
                replication_factor=settings.kafka.topic_replication_factor,
                min_insync_replicas=min_insync_replicas(settings.kafka.topic_replication_factor),
            )
    return {name: result[name] for name in names}


def _create(
    admin: AdminClient,
    settings: Settings,
    names: list[str],
    partitions: int,
    deadline: float,
) -> dict[str, str]:
    remaining = max(deadline - time.monotonic(), 1.0)
    futures = admin.create_topics(
        new_topics(settings, names, partitions),
        operation_timeout=remaining,
        request_timeout=remaining,
    )
    result: dict[str, str] = {}
    failures: list[str] = []
    for name, future in futures.items():
        try:
            future.result(timeout=max(deadline - time.monotonic(), 1.0))
            result[name] = "created"
        except KafkaException as exc:
            # Another process may have created it between our listing and our request.
            if _code(exc) == KafkaError.TOPIC_ALREADY_EXISTS:
                result[name] = "exists"
            else:
                failures.append(f"{name}: {_describe(exc)}")
        except TimeoutError:
            failures.append(f"{name}: no answer from the broker in time")
    if failures:
        raise TopicCreationError(
            f"could not create topics on {settings.kafka.bootstrap_servers}: " + "; ".join(failures)
        )
    return result


def _wait_until_ready(
    admin: AdminClient,
    names: Iterable[str],
    partitions: int,
    deadline: float,
    settings: Settings,
) -> None:
    # Creation is acknowledged before every partition has a leader; producing or
    # assigning partitions right away could then fail with UNKNOWN_TOPIC_OR_PART.
    pending = set(names)
    while pending:
        try:
            metadata = admin.list_topics(timeout=max(deadline - time.monotonic(), 1.0))
            pending = {name for name in pending if not _ready(metadata, name, partitions)}
        except KafkaException as exc:
            log.debug("metadata request failed while waiting for topics", error=_describe(exc))
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise TopicCreationError(
                f"topics {sorted(pending)} were created on {settings.kafka.bootstrap_servers} "
                "but their partitions have no leader yet"
            )
        time.sleep(0.1)


def _ready(metadata: Any, name: str, partitions: int) -> bool:
    topic = metadata.topics.get(name)
    if topic is None or topic.error is not None or len(topic.partitions) < partitions:
        return False
    return all(p.error is None and p.leader >= 0 for p in topic.partitions.values())


def _list_topics(admin: AdminClient, settings: Settings, timeout: float) -> dict[str, int]:
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailableError(
            f"Kafka is not reachable at {settings.kafka.bootstrap_servers}: {_describe(exc)}"
        ) from exc
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


def _code(exc: KafkaException) -> int | None:
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, KafkaError) else None


def _describe(exc: Exception) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)
