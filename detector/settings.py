"""Runtime configuration, read from ``FRAUDSTREAM_*`` environment variables.

Every number a user can tune lives here with its default and a one-line explanation;
the README's configuration table lists the same fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """fraudstream settings; each field is read from ``FRAUDSTREAM_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="FRAUDSTREAM_", extra="ignore")

    # --- Kafka -----------------------------------------------------------------------
    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated host:port."
    )
    topic_transactions: str = Field("transactions", description="Incoming transactions.")
    topic_decisions: str = Field("decisions", description="One decision per transaction.")
    topic_alerts: str = Field("alerts", description="Review and block decisions for analysts.")
    topic_labels: str = Field("labels", description="Analyst verdicts and chargebacks.")
    topic_dead_letters: str = Field(
        "transactions.dlq", description="Invalid transactions and labels, with the reason."
    )
    topic_model_status: str = Field(
        "model-status", description="Periodic snapshots of the deciding model."
    )
    topic_control: str = Field(
        "control", description="Threshold and model changes for the running detector."
    )
    topic_partitions: int = Field(3, ge=1, description="Partitions per topic on creation.")
    topic_replication_factor: int = Field(
        1, ge=1, description="Replication factor per topic on creation."
    )
    kafka_batch_size: int = Field(
        1000, ge=1, description="Most records the detector reads per partition per poll."
    )
    kafka_extra_config: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka properties (JSON), e.g. security settings.",
    )

    # --- Local broker ----------------------------------------------------------------
    home: Path = Field(
        Path(".fraudstream"),
        description="Folder for the local broker's jars, data and logs and the detector's "
        "recovery state.",
    )
    kafka_libs_dir: Path | None = Field(
        None, description="Cache of the local broker's jars (default: <home>/kafka/libs)."
    )
    kafka_version: str = Field("3.9.1", description="Apache Kafka version of the local broker.")
    kafka_heap: str = Field("512m", description="Java heap of the local broker.")

    # --- Detector --------------------------------------------------------------------
    recovery: bool = Field(True, description="Keep Bytewax recovery snapshots.")
    recovery_dir: Path | None = Field(
        None, description="Recovery snapshot folder (default: <home>/recovery)."
    )
    snapshot_interval_seconds: float = Field(
        1.0,
        gt=0,
        description="Epoch length: how often state and offsets are snapshotted; a crash "
        "publishes again at most about this much of the stream.",
    )
    workers: int = Field(1, ge=1, description="Bytewax worker threads per process.")
    process_id: int | None = Field(
        None, ge=0, description="This process's index in a multi-process detector cluster."
    )
    addresses: str | None = Field(
        None, description="host:port of every detector process, ';'-separated (a cluster)."
    )
    model_shards: int = Field(
        0,
        ge=0,
        description="Shards of the model step, each scoring its share of transactions on a "
        "worker of its own; 0: one per worker of the detector (processes x workers).",
    )
    status_interval_seconds: float = Field(
        5.0, gt=0, description="How often the model's status is published."
    )
    max_message_bytes: int = Field(
        65536, ge=256, description="Larger records go to the dead-letter topic."
    )
    max_clock_skew_seconds: float = Field(
        300.0, ge=0, description="Transactions this far in the future are rejected."
    )
    threshold_mode: Literal["volume", "fixed"] = Field(
        "volume",
        description="volume: thresholds follow the review and block shares of traffic; "
        "fixed: the review and block thresholds.",
    )
    review_share: float = Field(
        0.01, gt=0, lt=1, description="Share of transactions reviewed or blocked (volume mode)."
    )
    block_share: float = Field(
        0.001, gt=0, lt=1, description="Share of transactions blocked (volume mode)."
    )
    review_threshold: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Score at or above which a transaction is reviewed (fixed mode, and "
        "the first 1,000 transactions in volume mode).",
    )
    block_threshold: float = Field(
        0.9, ge=0, le=1, description="Score at or above which a transaction is blocked."
    )
    label_horizon_days: float = Field(
        45.0, gt=0, description="How long scored features wait for a late label (chargeback)."
    )
    presume_legit_days: float = Field(
        14.0,
        ge=0,
        description="A transaction without a label after this many days is learned as "
        "legitimate (no chargeback); 0 disables.",
    )
    label_park_seconds: float = Field(
        600.0,
        gt=0,
        description="How long a label waits for a transaction not seen yet before it is "
        "dead-lettered as unknown_transaction.",
    )
    waiting_cache_mb: int = Field(
        256,
        ge=1,
        description="RAM (MiB per worker) for the features waiting for a label; the rest "
        "stay on local disk beside the recovery snapshots.",
    )
    pending_max_per_terminal: int = Field(
        100_000,
        ge=100,
        description="Most scored transactions per terminal awaiting a label in memory "
        "(offline replays; the detector keeps them on disk).",
    )
    card_history_days: float = Field(
        30.0, gt=0, description="How far back a card's transactions are kept for features."
    )
    card_history_max: int = Field(1000, ge=10, description="Most transactions kept per card.")
    terminal_history_days: float = Field(
        28.0, gt=0, description="How far back a terminal's transactions and labels are kept."
    )
    classifier: Literal["logreg", "tree", "forest"] = Field(
        "logreg",
        description="Supervised model: logreg (logistic regression), tree (Hoeffding "
        "adaptive tree) or forest (adaptive random forest, slower).",
    )
    classifier_warmup_frauds: int = Field(
        50, ge=1, description="Fraud labels after which classifier and detector weigh equally."
    )
    challengers: list[Literal["logreg", "tree", "forest"]] = Field(
        default_factory=list,
        description='More supervised models (JSON list, e.g. ["tree"]) scored in shadow '
        "and learning from the same labels; an admin can make one of them decide.",
    )
    quality_window: int = Field(
        5000, ge=100, description="Labelled transactions behind the online quality figures."
    )

    # --- Metrics ---------------------------------------------------------------------
    metrics_host: str = Field(
        "127.0.0.1", description="Address of the detector's Prometheus /metrics endpoint."
    )
    metrics_port: int = Field(
        3030,
        ge=0,
        le=65535,
        description="Port of the detector's /metrics (0 disables); processes of a cluster "
        "on one host take the next ports, in process order.",
    )

    # --- API -------------------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="Address the API listens on.")
    api_port: int = Field(8000, ge=1, le=65535, description="Port the API listens on.")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the review database (default: a SQLite file "
        "<home>/review.db; e.g. postgresql+psycopg://user:pass@host/db).",
    )
    api_keys: SecretStr | None = Field(
        None,
        description="API keys as comma-separated role:key pairs (role: viewer, analyst, "
        "admin; role:name:key names the holder in the audit trail).",
    )
    api_keys_file: Path | None = Field(
        None, description="File with one role:key (or role:name:key) pair per line."
    )
    claim_ttl_seconds: float = Field(
        900.0, gt=0, description="How long an analyst's claim on an alert lasts."
    )
    outbox_interval_seconds: float = Field(
        1.0, gt=0, description="How often undelivered labels and control messages are retried."
    )

    # --- Logs ------------------------------------------------------------------------
    log_level: str = Field("INFO", description="Log level: DEBUG, INFO, WARNING, ERROR.")
    log_format: str = Field(
        "auto", description="console, json, or auto (console on a terminal, else json)."
    )

    @cached_property
    def brokers(self) -> list[str]:
        return [b.strip() for b in self.bootstrap_servers.split(",") if b.strip()]

    @property
    def cluster(self) -> list[str]:
        """host:port of every process of a detector cluster; empty for a single process."""
        return [a.strip() for a in (self.addresses or "").split(";") if a.strip()]

    @property
    def shards(self) -> int:
        """Shards of the model step in force (see ``model_shards``)."""
        return self.model_shards or max(len(self.cluster), 1) * self.workers

    @property
    def recovery_path(self) -> Path:
        return self.recovery_dir if self.recovery_dir is not None else self.home / "recovery"

    @property
    def database(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'review.db'}"

    @property
    def topics(self) -> list[str]:
        return [
            self.topic_transactions,
            self.topic_decisions,
            self.topic_alerts,
            self.topic_labels,
            self.topic_dead_letters,
            self.topic_model_status,
            self.topic_control,
        ]


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """The scoring core's knobs (a picklable subset of ``Settings``)."""

    card_history_days: float = 30.0
    card_history_max: int = 1000
    terminal_history_days: float = 28.0
    label_horizon_days: float = 45.0
    pending_max_per_terminal: int = 100_000
    presume_legit_days: float = 0.0
    label_park_seconds: float = 600.0
    threshold_mode: str = "volume"
    review_threshold: float = 0.6
    block_threshold: float = 0.9
    review_share: float = 0.01
    block_share: float = 0.001
    warmup_frauds: int = 50
    classifier: str = "logreg"
    challengers: tuple[str, ...] = ()
    quality_window: int = 5000
    shards: int = 1
    # The detector's store of features waiting for labels (None: in memory)
    waiting_store: str | None = None
    waiting_cache_mb: int = 256

    @property
    def model_kinds(self) -> tuple[str, ...]:
        """The classifier kinds to run, the deciding one at start first, each once."""
        return tuple(dict.fromkeys((self.classifier, *self.challengers)))

    def evaluation(self) -> CoreConfig:
        """The same core for an offline replay, where every label is explicit."""
        return dataclasses.replace(self, presume_legit_days=0.0)

    @classmethod
    def from_settings(cls, settings: Settings) -> CoreConfig:
        return cls(
            card_history_days=settings.card_history_days,
            card_history_max=settings.card_history_max,
            terminal_history_days=settings.terminal_history_days,
            label_horizon_days=settings.label_horizon_days,
            pending_max_per_terminal=settings.pending_max_per_terminal,
            presume_legit_days=settings.presume_legit_days,
            label_park_seconds=settings.label_park_seconds,
            threshold_mode=settings.threshold_mode,
            review_threshold=settings.review_threshold,
            block_threshold=settings.block_threshold,
            review_share=settings.review_share,
            block_share=settings.block_share,
            warmup_frauds=settings.classifier_warmup_frauds,
            classifier=settings.classifier,
            challengers=tuple(settings.challengers),
            quality_window=settings.quality_window,
            shards=settings.shards,
            waiting_cache_mb=settings.waiting_cache_mb,
        )
