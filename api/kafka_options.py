"""The review service's Kafka client options, from ``FRAUDSTREAM_KAFKA_EXTRA_CONFIG``.

The detector hands ``FRAUDSTREAM_KAFKA_EXTRA_CONFIG`` (librdkafka property names, string
values) to librdkafka as it is. The review service talks to Kafka through aiokafka, which
takes Python keyword arguments instead, so ``aiokafka_options`` translates:

==================================================  ========================================
librdkafka property                                 aiokafka keyword argument
==================================================  ========================================
``security.protocol``                               ``security_protocol`` (any case)
``sasl.mechanism`` (or ``sasl.mechanisms``)         ``sasl_mechanism``: PLAIN, SCRAM-SHA-256,
                                                    SCRAM-SHA-512, GSSAPI (librdkafka's
                                                    default, as here)
``sasl.username`` / ``sasl.password``               ``sasl_plain_username`` /
                                                    ``sasl_plain_password``
``sasl.kerberos.service.name``                      ``sasl_kerberos_service_name``
``ssl.ca.location`` (file, folder or ``probe``),    ``ssl_context``, built by
``ssl.ca.pem``, ``ssl.certificate.location``,       ``aiokafka.helpers.create_ssl_context``
``ssl.key.location``, ``ssl.key.password``,         when the protocol is SSL or SASL_SSL
``ssl.endpoint.identification.algorithm``
(``https``/``none``),
``enable.ssl.certificate.verification``
``client.id``                                       ``client_id``
``request.timeout.ms``                              ``request_timeout_ms``
``metadata.max.age.ms``                             ``metadata_max_age_ms``
``retry.backoff.ms``                                ``retry_backoff_ms``
``connections.max.idle.ms``                         ``connections_max_idle_ms``
producer: ``compression.type`` (``.codec``),        ``compression_type``, ``linger_ms``,
``linger.ms`` (``queue.buffering.max.ms``),         ``max_batch_size``, ``max_request_size``
``batch.size``, ``message.max.bytes``
consumer: ``session.timeout.ms``,                   the same names with ``_`` (and
``heartbeat.interval.ms``,                          ``fetch.wait.max.ms`` ->
``max.poll.interval.ms``, ``fetch.wait.max.ms``,    ``fetch_max_wait_ms``)
``fetch.min.bytes``, ``fetch.max.bytes``,
``max.partition.fetch.bytes``
(``fetch.message.max.bytes``), ``isolation.level``,
``check.crcs``, ``client.rack``
==================================================  ========================================

A producer property means nothing to the consumer and the other way round (as in
librdkafka): each client gets its own. The service fixes some properties itself:
``bootstrap.servers`` (``FRAUDSTREAM_BOOTSTRAP_SERVERS``), ``group.id``,
``enable.auto.commit`` and ``auto.offset.reset`` are refused; ``enable.idempotence`` and
``acks`` are accepted only as ``true`` and ``all`` (``-1``), which the producer always uses.

Properties that only tune librdkafka's own machinery (its queues, logs, sockets, version
probing) have no aiokafka meaning and are ignored: they are listed in ``IGNORED``. Any
other property is refused with a one-line ``KafkaConfigError`` naming it, rather than
silently connecting without, say, TLS. Messages never contain a property's value when it
may be a secret.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka import AIOKafkaProducer
from aiokafka.helpers import create_ssl_context

ENV_VAR = "FRAUDSTREAM_KAFKA_EXTRA_CONFIG"

Client = Literal["producer", "consumer"]
BOTH: frozenset[Client] = frozenset({"producer", "consumer"})
PRODUCER: frozenset[Client] = frozenset({"producer"})
CONSUMER: frozenset[Client] = frozenset({"consumer"})

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI")
COMPRESSION_TYPES = ("none", "gzip", "snappy", "lz4", "zstd")
ISOLATION_LEVELS = ("read_committed", "read_uncommitted")
# librdkafka's spellings of a boolean.
TRUE = ("true", "t", "1")
FALSE = ("false", "f", "0")

# librdkafka's own names for the same property: the first is the one looked up.
ALIASES: Mapping[str, str] = {
    "sasl.mechanisms": "sasl.mechanism",
    "compression.codec": "compression.type",
    "queue.buffering.max.ms": "linger.ms",
    "fetch.message.max.bytes": "max.partition.fetch.bytes",
    "request.required.acks": "acks",
    "metadata.broker.list": "bootstrap.servers",
}

# Properties that tune librdkafka internals only; aiokafka has no such knob, so they are
# accepted (the detector may need them) and ignored by the review service.
IGNORED: frozenset[str] = frozenset(
    {
        # logging and statistics
        "debug",
        "log_level",
        "log.queue",
        "log.thread.name",
        "log.connection.close",
        "statistics.interval.ms",
        "enable.random.seed",
        # broker version probing (aiokafka probes on its own)
        "api.version.request",
        "api.version.request.timeout.ms",
        "api.version.fallback.ms",
        "broker.version.fallback",
        # sockets, name resolution and reconnects
        "broker.address.family",
        "broker.address.ttl",
        "socket.timeout.ms",
        "socket.keepalive.enable",
        "socket.nagle.disable",
        "socket.send.buffer.bytes",
        "socket.receive.buffer.bytes",
        "socket.max.fails",
        "socket.connection.setup.timeout.ms",
        "reconnect.backoff.ms",
        "reconnect.backoff.max.ms",
        # metadata refresh scheduling (metadata.max.age.ms is mapped)
        "topic.metadata.refresh.interval.ms",
        "topic.metadata.refresh.fast.interval.ms",
        "topic.metadata.refresh.sparse",
        "topic.metadata.propagation.max.ms",
        # local queues and batching of librdkafka's producer and consumer
        "queue.buffering.max.messages",
        "queue.buffering.max.kbytes",
        "queued.min.messages",
        "queued.max.messages.kbytes",
        "batch.num.messages",
        "sticky.partitioning.linger.ms",
        "max.in.flight",
        "max.in.flight.requests.per.connection",
        "message.send.max.retries",
        "retries",
        # delivery timeouts: the outbox relay bounds each delivery itself
        "message.timeout.ms",
        "delivery.timeout.ms",
    }
)

# Set by the review service itself; overriding them would break its guarantees.
FIXED: Mapping[str, str] = {
    "bootstrap.servers": "set FRAUDSTREAM_BOOTSTRAP_SERVERS instead",
    "group.id": "the review service's consumer group is its own",
    "enable.auto.commit": "the review service commits offsets after its database writes",
    "auto.offset.reset": "the review service reads its topics from the earliest offset",
}

# Accepted when they say what the service does anyway (the detector may want them too).
REQUIRED_VALUES: Mapping[str, tuple[tuple[str, ...], str]] = {
    "enable.idempotence": (TRUE, "the review service's producer is idempotent"),
    "acks": (("all", "-1"), "the review service's producer waits for all in-sync replicas"),
}

SSL_PROPERTIES = frozenset(
    {
        "ssl.ca.location",
        "ssl.ca.pem",
        "ssl.certificate.location",
        "ssl.key.location",
        "ssl.key.password",
        "ssl.endpoint.identification.algorithm",
        "enable.ssl.certificate.verification",
    }
)


class KafkaConfigError(ValueError):
    """``FRAUDSTREAM_KAFKA_EXTRA_CONFIG`` cannot be used by the review service.

    The message is one line that names the variable and the property, and never holds a
    secret (``fraudstream api`` prints it and exits).
    """

    def __init__(self, message: str) -> None:
        super().__init__(f"{ENV_VAR}: {message}")


Parse = Callable[[str, str], Any]


def _text(_name: str, value: str) -> str:
    return value


def _milliseconds(name: str, value: str) -> int:
    return _integer(name, value, "a whole number of milliseconds")


def _bytes(name: str, value: str) -> int:
    return _integer(name, value, "a whole number of bytes")


def _integer(name: str, value: str, what: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise KafkaConfigError(f"{name} must be {what}, not {value!r}") from None
    if number < 0:
        raise KafkaConfigError(f"{name} must be {what}, not {value!r}")
    return number


def _boolean(name: str, value: str) -> bool:
    text = value.strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise KafkaConfigError(f"{name} must be true or false, not {value!r}")


def _choice(choices: tuple[str, ...], *, upper: bool = False) -> Parse:
    def parse(name: str, value: str) -> str:
        text = value.strip().upper() if upper else value.strip().lower()
        if text not in choices:
            raise KafkaConfigError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        return text

    return parse


def _compression(name: str, value: str) -> str | None:
    text = _choice(COMPRESSION_TYPES)(name, value)
    return None if text == "none" else text


@dataclass(frozen=True)
class _Option:
    kwarg: str
    parse: Parse
    clients: frozenset[Client] = BOTH


# Properties that map one to one onto a keyword argument.
OPTIONS: Mapping[str, _Option] = {
    "client.id": _Option("client_id", _text),
    "request.timeout.ms": _Option("request_timeout_ms", _milliseconds),
    "metadata.max.age.ms": _Option("metadata_max_age_ms", _milliseconds),
    "retry.backoff.ms": _Option("retry_backoff_ms", _milliseconds),
    "connections.max.idle.ms": _Option("connections_max_idle_ms", _milliseconds),
    "sasl.username": _Option("sasl_plain_username", _text),
    "sasl.password": _Option("sasl_plain_password", _text),
    "sasl.kerberos.service.name": _Option("sasl_kerberos_service_name", _text),
    "compression.type": _Option("compression_type", _compression, PRODUCER),
    "linger.ms": _Option("linger_ms", _milliseconds, PRODUCER),
    "batch.size": _Option("max_batch_size", _bytes, PRODUCER),
    "message.max.bytes": _Option("max_request_size", _bytes, PRODUCER),
    "session.timeout.ms": _Option("session_timeout_ms", _milliseconds, CONSUMER),
    "heartbeat.interval.ms": _Option("heartbeat_interval_ms", _milliseconds, CONSUMER),
    "max.poll.interval.ms": _Option("max_poll_interval_ms", _milliseconds, CONSUMER),
    "fetch.wait.max.ms": _Option("fetch_max_wait_ms", _milliseconds, CONSUMER),
    "fetch.min.bytes": _Option("fetch_min_bytes", _bytes, CONSUMER),
    "fetch.max.bytes": _Option("fetch_max_bytes", _bytes, CONSUMER),
    "max.partition.fetch.bytes": _Option("max_partition_fetch_bytes", _bytes, CONSUMER),
    "isolation.level": _Option("isolation_level", _choice(ISOLATION_LEVELS), CONSUMER),
    "check.crcs": _Option("check_crcs", _boolean, CONSUMER),
    "client.rack": _Option("client_rack", _text, CONSUMER),
}


def aiokafka_options(config: Mapping[str, str], client: Client) -> dict[str, Any]:
    """aiokafka keyword arguments for a ``client`` from librdkafka properties ``config``.

    Raises ``KafkaConfigError`` for a property the review service cannot honour.

    >>> aiokafka_options({"client.id": "review", "linger.ms": "5"}, "consumer")
    {'client_id': 'review'}
    """
    properties = _canonical(config)
    options: dict[str, Any] = {}
    for name, value in properties.items():
        if name in IGNORED or name in SSL_PROPERTIES:
            continue
        if name in ("security.protocol", "sasl.mechanism"):
            continue  # below, together
        if name in FIXED:
            raise KafkaConfigError(f"{name} cannot be set here: {FIXED[name]}")
        if name in REQUIRED_VALUES:
            allowed, why = REQUIRED_VALUES[name]
            if value.strip().lower() not in allowed:
                raise KafkaConfigError(f"{name} can only be {allowed[0]}: {why}")
            continue
        option = OPTIONS.get(name)
        if option is None:
            raise KafkaConfigError(
                f"unknown property {name!r}: the review service's Kafka client has no "
                "equivalent (what it maps and ignores: api/kafka_options.py)"
            )
        parsed = option.parse(name, value)
        if client in option.clients:
            options[option.kwarg] = parsed
    options |= _security(properties)
    return options


def _canonical(config: Mapping[str, str]) -> dict[str, str]:
    """Properties under their canonical names; an alias and its property may not both be set."""
    properties: dict[str, str] = {}
    for raw_name, raw_value in config.items():
        name = raw_name.strip()
        canonical = ALIASES.get(name, name)
        if canonical in properties:
            raise KafkaConfigError(
                f"{name} and {canonical} are the same property: set only {canonical}"
            )
        properties[canonical] = str(raw_value)
    return properties


def _security(properties: Mapping[str, str]) -> dict[str, Any]:
    """``security_protocol``, the SASL mechanism and credentials, and the TLS context."""
    protocol = _choice(SECURITY_PROTOCOLS, upper=True)(
        "security.protocol", properties.get("security.protocol", "PLAINTEXT")
    )
    options: dict[str, Any] = {}
    if "security.protocol" in properties:
        options["security_protocol"] = protocol
    # librdkafka's default mechanism is GSSAPI: kept, so both sides agree.
    mechanism = properties.get("sasl.mechanism", "GSSAPI").strip().upper()
    if mechanism == "OAUTHBEARER":
        raise KafkaConfigError(
            "sasl.mechanism OAUTHBEARER is not supported by the review service "
            "(use PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or GSSAPI)"
        )
    _choice(SASL_MECHANISMS, upper=True)("sasl.mechanism", mechanism)
    if "sasl.mechanism" in properties:
        options["sasl_mechanism"] = mechanism
    if protocol.startswith("SASL_"):
        options["sasl_mechanism"] = mechanism
        if mechanism == "GSSAPI" and importlib.util.find_spec("gssapi") is None:
            raise KafkaConfigError(
                "sasl.mechanism GSSAPI (librdkafka's default when none is set) needs the "
                "Python package gssapi, which is not installed"
            )
        if mechanism != "GSSAPI":
            missing = [p for p in ("sasl.username", "sasl.password") if not properties.get(p)]
            if missing:
                raise KafkaConfigError(f"sasl.mechanism {mechanism} needs {' and '.join(missing)}")
    if protocol in ("SSL", "SASL_SSL"):
        # As in librdkafka, the ssl.* properties matter only with a TLS protocol.
        options["ssl_context"] = _ssl_context(properties)
    return options


def _ssl_files(properties: Mapping[str, str]) -> dict[str, str]:
    """``create_ssl_context`` file arguments; each named file must be readable."""
    files: dict[str, str] = {}
    ca = properties.get("ssl.ca.location", "").strip()
    if ca and ca != "probe":  # probe: the system's CA store, create_ssl_context's default
        files["capath" if os.path.isdir(ca) else "cafile"] = ca
    for name, argument in (
        ("ssl.certificate.location", "certfile"),
        ("ssl.key.location", "keyfile"),
    ):
        if path := properties.get(name, "").strip():
            files[argument] = path
    named = {
        "cafile": "ssl.ca.location",
        "capath": "ssl.ca.location",
        "certfile": "ssl.certificate.location",
        "keyfile": "ssl.key.location",
    }
    for argument, path in files.items():
        if not os.access(path, os.R_OK):
            raise KafkaConfigError(f"{named[argument]}: cannot read {path!r}")
    if "keyfile" in files and "certfile" not in files:
        raise KafkaConfigError("ssl.key.location needs ssl.certificate.location")
    return files


def _ssl_context(properties: Mapping[str, str]) -> ssl.SSLContext:
    files = _ssl_files(properties)
    password = properties.get("ssl.key.password") or None
    cadata = properties.get("ssl.ca.pem") or None
    try:
        context = create_ssl_context(cadata=cadata, password=password, **files)
    except (OSError, ssl.SSLError, ValueError) as error:
        # OpenSSL's messages hold no key material; one line of it is enough.
        reason = (str(error).splitlines() or [type(error).__name__])[0][:200]
        raise KafkaConfigError(f"the TLS settings (ssl.*) cannot be loaded: {reason}") from None
    algorithm = properties.get("ssl.endpoint.identification.algorithm", "https").strip().lower()
    if algorithm not in ("https", "none"):
        raise KafkaConfigError(
            f"ssl.endpoint.identification.algorithm must be https or none, not {algorithm!r}"
        )
    verify = _boolean(
        "enable.ssl.certificate.verification",
        properties.get("enable.ssl.certificate.verification", "true"),
    )
    if algorithm == "none" or not verify:
        context.check_hostname = False
    if not verify:
        context.verify_mode = ssl.CERT_NONE
    return context


def idempotent_producer_options(
    config: Mapping[str, str], bootstrap_servers: str, *, client_id: str, request_timeout_ms: int
) -> dict[str, Any]:
    """An API producer's keyword arguments: defaults, the extra config, then what is fixed.

    No duplicates from the producer's own retries, and a record is acknowledged only once
    every in-sync replica has it.
    """
    return {
        "client_id": client_id,
        "request_timeout_ms": request_timeout_ms,
        **aiokafka_options(config, "producer"),
        "bootstrap_servers": bootstrap_servers,
        "enable_idempotence": True,
        "acks": "all",
    }


async def started_producer(options: dict[str, Any]) -> AIOKafkaProducer:
    """An aiokafka producer of ``options``, started; stopped again if it cannot start."""
    producer = AIOKafkaProducer(**options)
    try:
        await producer.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await producer.stop()
        raise
    return producer
