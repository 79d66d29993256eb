"""What the local broker is configured with: its ``server.properties``, cluster id and ports.

A combined broker and controller node (KRaft) tuned for local use, optionally with a
SASL_PLAINTEXT listener (``SaslListener``) for one user beside the PLAINTEXT one. Plain
functions and values, no processes: ``detector.local.broker`` writes them out and runs
the broker.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class BrokerError(RuntimeError):
    """The local broker could not be set up, started or stopped."""


@dataclass(frozen=True)
class SaslListener:
    """A SASL_PLAINTEXT listener on ``port`` accepting ``username`` with ``password`` (PLAIN)."""

    port: int
    username: str
    password: str

    NAME = "SASL_PLAINTEXT"

    def __post_init__(self) -> None:
        # Both end up quoted in a JAAS line, the user name also in a property key.
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.username):
            raise ValueError(
                f"SASL user name must be letters, digits, '_', '.' or '-': {self.username!r}"
            )
        if not re.fullmatch(r"[!#-\[\]-~]+", self.password):
            raise ValueError("SASL password must be printable ASCII without spaces, '\"' or '\\'")

    def jaas_config(self) -> str:
        """The listener's JAAS line: its own login, and the one user it accepts."""
        return (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{self.username}" password="{self.password}" '
            f'user_{self.username}="{self.password}";'
        )

    def client_config(self) -> dict[str, str]:
        """librdkafka properties (``FRAUDSTREAM_KAFKA_EXTRA_CONFIG``) to sign in here."""
        return {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": self.username,
            "sasl.password": self.password,
        }


def new_cluster_id() -> str:
    """A KRaft cluster id: 22 URL-safe base64 characters of 16 random bytes."""
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).decode("ascii").rstrip("=")
        # StorageTool would parse an id starting with '-' as an option.
        if not cluster_id.startswith("-"):
            return cluster_id


def is_valid_cluster_id(value: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", value) is not None


def server_properties(
    *,
    host: str,
    port: int,
    controller_port: int,
    data_dir: Path,
    sasl: SaslListener | None = None,
) -> dict[str, str]:
    """``server.properties`` of a combined broker+controller node tuned for local use."""
    listeners = [f"PLAINTEXT://{host}:{port}", f"CONTROLLER://{host}:{controller_port}"]
    advertised = [f"PLAINTEXT://{host}:{port}"]
    protocols = ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT"]
    sasl_properties: dict[str, str] = {}
    if sasl is not None:
        listeners.append(f"{sasl.NAME}://{host}:{sasl.port}")
        advertised.append(f"{sasl.NAME}://{host}:{sasl.port}")
        protocols.append(f"{sasl.NAME}:SASL_PLAINTEXT")
        sasl_properties = {
            "sasl.enabled.mechanisms": "PLAIN",
            f"listener.name.{sasl.NAME.lower()}.plain.sasl.jaas.config": sasl.jaas_config(),
        }
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        # A static quorum works unchanged from Kafka 3.7 to 4.x (no --standalone format).
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": ",".join(listeners),
        "advertised.listeners": ",".join(advertised),
        "controller.listener.names": "CONTROLLER",
        # The broker talks to itself over PLAINTEXT, whatever the clients use.
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": ",".join(protocols),
        **sasl_properties,
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        # One node: internal topics cannot have more than one replica.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        # The defaults (50 partitions, 3 s delay) make every first group join slow.
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
    }


def render_properties(properties: Mapping[str, str]) -> str:
    """Java properties text; backslashes escaped since Java reads them as escapes."""
    lines = [
        "# Written by fraudstream (detector/local/broker_config.py); regenerated on every start."
    ]
    lines += [f"{key}={value.replace(chr(92), chr(92) * 2)}" for key, value in properties.items()]
    return "\n".join(lines) + "\n"


def find_free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports free on ``host`` right now (all held open together so they differ)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
