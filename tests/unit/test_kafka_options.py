"""FRAUDSTREAM_KAFKA_EXTRA_CONFIG (librdkafka properties) as aiokafka keyword arguments."""

from __future__ import annotations

import inspect
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from api import kafka_options
from api.kafka_options import (
    ALIASES,
    ENV_VAR,
    FIXED,
    IGNORED,
    OPTIONS,
    Client,
    KafkaConfigError,
    aiokafka_options,
)
from detector.settings import Settings

SASL_PLAIN = {
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanism": "PLAIN",
    "sasl.username": "fraudstream",
    "sasl.password": "s3cret-Pa55",
}
CLIENTS: tuple[Client, ...] = ("producer", "consumer")


def refused(config: dict[str, str], client: Client = "producer") -> str:
    """The one-line message ``config`` is refused with."""
    with pytest.raises(KafkaConfigError) as caught:
        aiokafka_options(config, client)
    message = str(caught.value)
    assert message.startswith(f"{ENV_VAR}: ")
    assert "\n" not in message
    return message


def kwargs_of(cls: type) -> set[str]:
    return set(inspect.signature(cls).parameters) - {"topics", "loop"}


# --- what is mapped ---------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_no_extra_config_adds_nothing(client: Client) -> None:
    assert aiokafka_options({}, client) == {}


@pytest.mark.parametrize("client", CLIENTS)
def test_sasl_plain_over_plaintext(client: Client) -> None:
    assert aiokafka_options(SASL_PLAIN, client) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "fraudstream",
        "sasl_plain_password": "s3cret-Pa55",
    }


def test_environment_variable_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        ENV_VAR,
        '{"security.protocol":"SASL_PLAINTEXT","sasl.mechanism":"PLAIN",'
        '"sasl.username":"u","sasl.password":"p"}',
    )
    options = aiokafka_options(Settings().kafka.kafka_extra_config, "producer")
    assert options == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "u",
        "sasl_plain_password": "p",
    }


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "scram-sha-512"])
def test_scram_over_tls_with_the_alias_and_any_case(mechanism: str) -> None:
    options = aiokafka_options(
        {
            "security.protocol": "sasl_ssl",
            "sasl.mechanisms": mechanism,
            "sasl.username": "u",
            "sasl.password": "p",
        },
        "consumer",
    )
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == mechanism.upper()
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("u", "p")
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def test_plain_tls_uses_the_system_store_by_default() -> None:
    for config in (
        {"security.protocol": "SSL"},
        {"security.protocol": "SSL", "ssl.ca.location": "probe"},
    ):
        options = aiokafka_options(config, "producer")
        assert set(options) == {"security_protocol", "ssl_context"}
        assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA and a client certificate with an encrypted key, made by openssl."""
    folder = tmp_path_factory.mktemp("tls")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    try:
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
            "-out", "ca.pem", "-days", "2", "-subj", "/CN=test-ca")  # fmt: skip
        run("req", "-newkey", "rsa:2048", "-passout", "pass:key-pass", "-keyout", "client.key",
            "-out", "client.csr", "-subj", "/CN=client")  # fmt: skip
        run("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "client.pem", "-days", "2")  # fmt: skip
    except FileNotFoundError:
        pytest.skip("openssl is not installed")
    return {name: folder / name for name in ("ca.pem", "client.pem", "client.key")}


def test_tls_files_and_key_password(tls_files: dict[str, Path]) -> None:
    options = aiokafka_options(
        {
            "security.protocol": "SSL",
            "ssl.ca.location": str(tls_files["ca.pem"]),
            "ssl.certificate.location": str(tls_files["client.pem"]),
            "ssl.key.location": str(tls_files["client.key"]),
            "ssl.key.password": "key-pass",
        },
        "producer",
    )
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test-ca"),),)]


def test_tls_ca_as_pem_text_or_folder(tls_files: dict[str, Path]) -> None:
    pem = tls_files["ca.pem"].read_text()
    for config in (
        {"security.protocol": "SSL", "ssl.ca.pem": pem},
        {"security.protocol": "SSL", "ssl.ca.location": str(tls_files["ca.pem"].parent)},
    ):
        assert isinstance(aiokafka_options(config, "consumer")["ssl_context"], ssl.SSLContext)


def test_a_wrong_key_password_is_a_clear_error(tls_files: dict[str, Path]) -> None:
    message = refused(
        {
            "security.protocol": "SSL",
            "ssl.certificate.location": str(tls_files["client.pem"]),
            "ssl.key.location": str(tls_files["client.key"]),
            "ssl.key.password": "not-the-pass",
        }
    )
    assert "ssl" in message and "not-the-pass" not in message


def test_hostname_and_certificate_checks_can_be_turned_off() -> None:
    no_hostname = aiokafka_options(
        {"security.protocol": "SSL", "ssl.endpoint.identification.algorithm": "none"}, "producer"
    )["ssl_context"]
    assert not no_hostname.check_hostname and no_hostname.verify_mode == ssl.CERT_REQUIRED
    no_verify = aiokafka_options(
        {"security.protocol": "SSL", "enable.ssl.certificate.verification": "false"}, "producer"
    )["ssl_context"]
    assert not no_verify.check_hostname and no_verify.verify_mode == ssl.CERT_NONE


def test_tls_properties_without_a_tls_protocol_are_left_alone() -> None:
    # As librdkafka does: they matter only once security.protocol says SSL or SASL_SSL.
    assert aiokafka_options({"ssl.ca.location": "/nowhere/ca.pem"}, "producer") == {}


@pytest.mark.parametrize(
    ("prop", "value", "kwarg", "expected"),
    [
        ("client.id", "review-eu", "client_id", "review-eu"),
        ("request.timeout.ms", "30000", "request_timeout_ms", 30000),
        ("metadata.max.age.ms", " 60000 ", "metadata_max_age_ms", 60000),
        ("retry.backoff.ms", "250", "retry_backoff_ms", 250),
        ("connections.max.idle.ms", "0", "connections_max_idle_ms", 0),
        ("sasl.kerberos.service.name", "kafka-prod", "sasl_kerberos_service_name", "kafka-prod"),
    ],
)
@pytest.mark.parametrize("client", CLIENTS)
def test_client_properties(
    client: Client, prop: str, value: str, kwarg: str, expected: Any
) -> None:
    assert aiokafka_options({prop: value}, client) == {kwarg: expected}


@pytest.mark.parametrize(
    ("config", "kwargs"),
    [
        ({"compression.type": "zstd"}, {"compression_type": "zstd"}),
        ({"compression.codec": "LZ4"}, {"compression_type": "lz4"}),
        ({"compression.type": "none"}, {"compression_type": None}),
        ({"linger.ms": "5"}, {"linger_ms": 5}),
        ({"queue.buffering.max.ms": "7"}, {"linger_ms": 7}),
        ({"batch.size": "65536"}, {"max_batch_size": 65536}),
        ({"message.max.bytes": "2000000"}, {"max_request_size": 2000000}),
    ],
)
def test_producer_properties_are_the_producers_alone(
    config: dict[str, str], kwargs: dict[str, Any]
) -> None:
    assert aiokafka_options(config, "producer") == kwargs
    assert aiokafka_options(config, "consumer") == {}


@pytest.mark.parametrize(
    ("config", "kwargs"),
    [
        ({"session.timeout.ms": "45000"}, {"session_timeout_ms": 45000}),
        ({"heartbeat.interval.ms": "3000"}, {"heartbeat_interval_ms": 3000}),
        ({"max.poll.interval.ms": "600000"}, {"max_poll_interval_ms": 600000}),
        ({"fetch.wait.max.ms": "100"}, {"fetch_max_wait_ms": 100}),
        ({"fetch.min.bytes": "1"}, {"fetch_min_bytes": 1}),
        ({"fetch.max.bytes": "1048576"}, {"fetch_max_bytes": 1048576}),
        ({"max.partition.fetch.bytes": "262144"}, {"max_partition_fetch_bytes": 262144}),
        ({"fetch.message.max.bytes": "131072"}, {"max_partition_fetch_bytes": 131072}),
        ({"isolation.level": "read_committed"}, {"isolation_level": "read_committed"}),
        ({"check.crcs": "false"}, {"check_crcs": False}),
        ({"check.crcs": "T"}, {"check_crcs": True}),
        ({"client.rack": "eu-west-1a"}, {"client_rack": "eu-west-1a"}),
    ],
)
def test_consumer_properties_are_the_consumers_alone(
    config: dict[str, str], kwargs: dict[str, Any]
) -> None:
    assert aiokafka_options(config, "consumer") == kwargs
    assert aiokafka_options(config, "producer") == {}


def test_every_mapped_keyword_exists_in_aiokafka() -> None:
    # A renamed or dropped aiokafka argument fails here, not at a customer's first connect.
    producer, consumer = kwargs_of(AIOKafkaProducer), kwargs_of(AIOKafkaConsumer)
    for prop, option in OPTIONS.items():
        if "producer" in option.clients:
            assert option.kwarg in producer, prop
        if "consumer" in option.clients:
            assert option.kwarg in consumer, prop
    fixed = {"security_protocol", "sasl_mechanism", "ssl_context"}
    assert fixed <= producer & consumer


# --- what the service keeps to itself --------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"enable.idempotence": "true"}, None),
        ({"enable.idempotence": "1"}, None),
        ({"acks": "all"}, None),
        ({"acks": "-1"}, None),
        ({"request.required.acks": "all"}, None),
        ({"enable.idempotence": "false"}, "enable.idempotence can only be true"),
        ({"acks": "1"}, "acks can only be all"),
        ({"request.required.acks": "0"}, "acks can only be all"),
    ],
)
def test_durability_cannot_be_weakened(config: dict[str, str], fragment: str | None) -> None:
    if fragment is None:
        assert aiokafka_options(config, "producer") == {}
    else:
        assert fragment in refused(config)


@pytest.mark.parametrize("prop", [*sorted(FIXED), "metadata.broker.list"])
def test_properties_the_service_sets_itself_are_refused(prop: str) -> None:
    message = refused({prop: "x"}, "consumer")
    assert f"{ALIASES.get(prop, prop)} cannot be set here" in message


# --- what is ignored, and what is refused ----------------------------------------------------


@pytest.mark.parametrize("prop", sorted(IGNORED))
def test_librdkafka_internals_are_ignored(prop: str) -> None:
    for client in CLIENTS:
        assert aiokafka_options({prop: "1", **SASL_PLAIN}, client) == aiokafka_options(
            SASL_PLAIN, client
        )


def test_the_lists_do_not_overlap() -> None:
    assert not set(OPTIONS) & IGNORED
    assert not set(FIXED) & IGNORED
    assert not set(ALIASES) & (set(OPTIONS) | IGNORED)


@pytest.mark.parametrize(
    "prop",
    [
        "sasl.jaas.config",  # a Java client property
        "ssl.truststore.location",  # Java again
        "ssl.cipher.suites",  # meaningful, but not supported: never silently dropped
        "sasl.kerberos.keytab",
        "transactional.id",
        "partition.assignment.strategy",
        "security.protocoll",  # a typo
        "",
    ],
)
def test_unknown_properties_are_refused_by_name(prop: str) -> None:
    message = refused({prop: "anything", **SASL_PLAIN})
    assert f"unknown property {prop!r}" in message
    assert "anything" not in message


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"security.protocol": "TLS"}, "security.protocol must be one of PLAINTEXT, SSL"),
        ({"sasl.mechanism": "MAGIC"}, "sasl.mechanism must be one of PLAIN"),
        (
            {"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"},
            "OAUTHBEARER is not supported",
        ),
        (
            {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN"},
            "PLAIN needs sasl.username and sasl.password",
        ),
        (
            {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "SCRAM-SHA-256",
                "sasl.username": "u",
            },
            "SCRAM-SHA-256 needs sasl.password",
        ),
        ({"sasl.mechanism": "PLAIN", "sasl.mechanisms": "PLAIN"}, "set only sasl.mechanism"),
        ({"request.timeout.ms": "10s"}, "request.timeout.ms must be a whole number of millisec"),
        ({"linger.ms": "-1"}, "linger.ms must be a whole number"),
        ({"batch.size": "1.5"}, "batch.size must be a whole number of bytes"),
        ({"compression.type": "brotli"}, "compression.type must be one of none, gzip"),
        ({"isolation.level": "serializable"}, "isolation.level must be one of"),
        ({"check.crcs": "yes"}, "check.crcs must be true or false"),
        (
            {"security.protocol": "SSL", "ssl.endpoint.identification.algorithm": "dns"},
            "ssl.endpoint.identification.algorithm must be https or none",
        ),
        (
            {"security.protocol": "SSL", "enable.ssl.certificate.verification": "maybe"},
            "enable.ssl.certificate.verification must be true or false",
        ),
        (
            {"security.protocol": "SSL", "ssl.ca.location": "/nowhere/ca.pem"},
            "ssl.ca.location: cannot read '/nowhere/ca.pem'",
        ),
        (
            {"security.protocol": "SSL", "ssl.certificate.location": "/nowhere/c.pem"},
            "ssl.certificate.location: cannot read",
        ),
    ],
)
def test_bad_values_are_clear_one_line_errors(config: dict[str, str], fragment: str) -> None:
    assert fragment in refused(config)


@pytest.mark.parametrize("installed", [True, False])
def test_gssapi_is_librdkafkas_default_and_needs_its_package(
    monkeypatch: pytest.MonkeyPatch, installed: bool
) -> None:
    monkeypatch.setattr(
        kafka_options.importlib.util,
        "find_spec",
        lambda name: object() if installed and name == "gssapi" else None,
    )
    config = {"security.protocol": "SASL_PLAINTEXT", "sasl.kerberos.service.name": "kafka-eu"}
    if installed:
        assert aiokafka_options(config, "consumer") == {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "GSSAPI",
            "sasl_kerberos_service_name": "kafka-eu",
        }
    else:
        assert "GSSAPI (librdkafka's default when none is set) needs" in refused(config)


def test_a_key_without_its_certificate(tls_files: dict[str, Path]) -> None:
    message = refused(
        {"security.protocol": "SSL", "ssl.key.location": str(tls_files["client.key"])}
    )
    assert "ssl.key.location needs ssl.certificate.location" in message


def test_a_file_that_is_no_certificate(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    assert "cannot be loaded" in refused({"security.protocol": "SSL", "ssl.ca.location": str(junk)})


def test_secrets_never_appear_in_errors() -> None:
    message = refused({**SASL_PLAIN, "ssl.keystore.password": "hunter2-keystore"})
    assert "ssl.keystore.password" in message
    assert "hunter2" not in message and SASL_PLAIN["sasl.password"] not in message


def test_the_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown property 'nope'"):
        aiokafka_options({"nope": "1"}, "consumer")
