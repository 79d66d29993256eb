"""Runtime configuration, read from ``FRAUDSTREAM_*`` environment variables.

Every number a user can tune lives here, once, with its default and a one-line
explanation; the README's configuration table lists the same fields, group by group
(``tests/unit/test_docs.py`` checks it). ``Settings`` holds one group per part of the
system; each group reads its own fields from ``FRAUDSTREAM_<FIELD>``, so the variable
names do not say the group.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Every group reads FRAUDSTREAM_<FIELD>; variables of the other groups are ignored.
ENV = SettingsConfigDict(env_prefix="FRAUDSTREAM_", extra="ignore")


class KafkaSettings(BaseSettings):
    """Kafka: the brokers, the topics, and the client configuration."""

    model_config = ENV

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
    topic_model_status: str = Field("model-status", description="Periodic snapshots of each model.")
    topic_control: str = Field(
        "control", description="Threshold and model changes for the running detector."
    )
    topic_score_requests: str = Field(
        "score-requests", description="Transactions to decide synchronously (`POST /api/score`)."
    )
    topic_score_replies: str = Field(
        "score-replies", description="The detector's answers to synchronous score requests."
    )
    topic_detector_events: str = Field(
        "detector-events", description="Attacks and drifts the detector notices."
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

    @cached_property
    def brokers(self) -> list[str]:
        return [b.strip() for b in self.bootstrap_servers.split(",") if b.strip()]

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
            self.topic_score_requests,
            self.topic_score_replies,
            self.topic_detector_events,
        ]


class LocalSettings(BaseSettings):
    """The local system: its folder and the local broker."""

    model_config = ENV

    home: Path = Field(
        Path(".fraudstream"),
        description="Folder for the local broker's jars, data and logs and the detector's "
        "recovery state.",
    )
    kafka_libs_dir: Path | None = Field(
        None, description="Cache of the local broker's jars (default: `<home>/kafka/libs`)."
    )
    kafka_version: str = Field("3.9.1", description="Apache Kafka version of the local broker.")
    kafka_heap: str = Field("512m", description="Java heap of the local broker.")


class ScoringSettings(BaseSettings):
    """The scoring core: features, thresholds, models and labels.

    Frozen: every keyed step of the dataflow holds a copy (pickled into its state
    builder), which must not drift from the others.
    """

    model_config = SettingsConfigDict(**ENV, frozen=True)

    threshold_mode: Literal["capacity", "volume", "fixed"] = Field(
        "capacity",
        description="`capacity`: about `REVIEW_CAPACITY_PER_HOUR` alerts an hour, whatever "
        "the traffic; `volume`: thresholds follow the review and block shares of traffic; "
        "`fixed`: the review and block thresholds.",
    )
    review_capacity_per_hour: float = Field(
        60.0,
        gt=0,
        le=1_000_000,
        description="Alerts (review or block) an hour the analysts can handle, all shards "
        "together (capacity mode).",
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
        "the first 1,000 transactions in volume mode, the first 100 in capacity mode).",
    )
    block_threshold: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Score at or above which a transaction is blocked (fixed mode; in "
        "capacity mode an alert at or above it); 1 means never.",
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
        "dead-lettered as `unknown_transaction`.",
    )
    waiting_cache_mb: int = Field(
        32,
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
        description="Supervised model: `logreg` (logistic regression), `tree` (Hoeffding "
        "adaptive tree) or `forest` (adaptive random forest, slower).",
    )
    classifier_warmup_frauds: int = Field(
        50, ge=1, description="Fraud labels after which classifier and detector weigh equally."
    )
    challengers: tuple[Literal["logreg", "tree", "forest"], ...] = Field(
        (),
        description='More supervised models (JSON list, e.g. `["tree"]`) scored in shadow '
        "and learning from the same labels; an admin can make one of them decide.",
    )
    quality_window: int = Field(
        5000, ge=100, description="Labelled transactions behind the online quality figures."
    )
    quality_min_frauds: int = Field(
        30,
        ge=1,
        description="Frauds in the quality window below which AUC, AP and recall are null.",
    )
    quality_min_legit: int = Field(
        30,
        ge=1,
        description="Legitimate labels in the quality window below which AUC and AP are null.",
    )
    quality_min_alerts: int = Field(
        30,
        ge=1,
        description="Labelled alerts in the quality window below which alert precision is null.",
    )
    exploration_share: float = Field(
        0.002,
        ge=0,
        lt=1,
        description="Share of the allowed transactions put up for review anyway, chosen by "
        "a hash of the transaction id (the unbiased sample that measures the model); 0 "
        "disables.",
    )
    exploration_max_per_hour: int = Field(
        30,
        ge=0,
        description="Most transactions of the exploration sample per hour of transaction "
        "time, all shards together.",
    )
    quality_min_exploration: int = Field(
        100,
        ge=1,
        description="Labels of the exploration sample in the quality window below which the "
        "whole-traffic estimates (fraud rate among the allowed, recall) are null.",
    )
    max_block_share: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Most blocks in the last `BLOCK_CAP_WINDOW` decisions (per model shard), "
        "as a share; past it blocks become reviews. 1 (the default) disables the cap; 10 "
        "times `BLOCK_SHARE` (0.01) is a sensible cap in volume mode.",
    )
    block_cap_window: int = Field(
        1000, ge=10, description="Decisions over which the block cap counts the blocks."
    )
    calibration_base_rate: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="Fraud rate assumed before labels: the published score of a new model "
        "is this rate's odds times the raw score's odds (see What a score means).",
    )
    calibration_half_life_labels: int = Field(
        50_000,
        ge=100,
        description="Labels (per model shard) after which a label weighs half in the "
        "calibration of scores to fraud probabilities.",
    )
    # Detector events: bursts at a terminal, and shifts in scores, features and labels.
    burst_window_minutes: float = Field(
        5.0, gt=0, le=1440, description="Window in which a terminal's cards are counted."
    )
    burst_min_cards: int = Field(
        10, ge=2, description="Fewest distinct cards at a terminal in the window for a burst."
    )
    burst_ratio: float = Field(
        5.0,
        ge=1,
        description="Fewest times the terminal's usual cards in a window for a burst (or "
        "for card testing).",
    )
    burst_small_amount: float = Field(
        5.0, ge=0, description="Amounts at or below this count as small (card testing)."
    )
    burst_min_small: int = Field(
        10, ge=2, description="Fewest small amounts at a terminal in the window for card testing."
    )
    burst_review_minutes: float = Field(
        60.0,
        ge=0,
        description="After a burst or card testing, the terminal's transactions go to review "
        "(at least) for this long, whatever the thresholds; 0 only reports the events.",
    )
    events_interval_seconds: float = Field(
        60.0,
        gt=0,
        description="Interval over which the deciding model's mean score and the features' "
        "means are compared with their past (event time).",
    )
    events_min_count: int = Field(
        10, ge=2, description="Fewest transactions in an interval before it is compared."
    )
    events_threshold: float = Field(
        8.0,
        gt=0,
        description="Standard errors between an interval's mean and the past for a "
        "`score_shift`, `feature_shift` or `fraud_rate_change`.",
    )
    events_feature_sample: int = Field(
        8,
        ge=1,
        description="Every n-th transaction's features are watched for shifts (over "
        "intervals n times `EVENTS_INTERVAL_SECONDS`).",
    )
    events_label_interval_seconds: float = Field(
        3600.0,
        gt=0,
        description="Interval over which the share of frauds among new labels is compared "
        "with its past (label time).",
    )
    checkpoint_every_labels: int = Field(
        1000,
        ge=10,
        description="Labels learned between two checkpoints of a model (what it can be "
        "rolled back to).",
    )
    checkpoints_kept: int = Field(
        5, ge=1, le=100, description="Checkpoints kept per model, the newest."
    )

    # Where this run places the model step (not settings: the detector sets them, see
    # ``placed``): its shards, and the store of the features waiting for labels (None:
    # in memory, as in offline replays).
    _shards: int = PrivateAttr(1)
    _waiting_store: Path | None = PrivateAttr(None)

    @property
    def shards(self) -> int:
        """Shards of the model step in this run."""
        return self._shards

    @property
    def waiting_store(self) -> Path | None:
        """The detector's store of features waiting for labels (None: in memory)."""
        return self._waiting_store

    @property
    def model_kinds(self) -> tuple[str, ...]:
        """The classifier kinds to run, the deciding one at start first, each once."""
        return tuple(dict.fromkeys((self.classifier, *self.challengers)))

    def placed(self, *, shards: int = 1, waiting_store: Path | None = None) -> ScoringSettings:
        """These settings for a model step of ``shards`` shards, waiting features in
        ``waiting_store``."""
        placed = self.model_copy()
        placed._shards = shards
        placed._waiting_store = waiting_store
        return placed

    def evaluation(self) -> ScoringSettings:
        """The same core for an offline replay, where every label is explicit."""
        return self.model_copy(update={"presume_legit_days": 0.0})


class DetectorSettings(BaseSettings):
    """The detector process: workers, recovery, model shards, inputs and /metrics."""

    model_config = ENV

    recovery: bool = Field(True, description="Keep Bytewax recovery snapshots.")
    recovery_dir: Path | None = Field(
        None, description="Recovery snapshot folder (default: `<home>/recovery`)."
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
        None, description="host:port of every detector process, `;`-separated (a cluster)."
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
    metrics_host: str = Field(
        "127.0.0.1", description="Address of the detector's Prometheus `/metrics` endpoint."
    )
    metrics_port: int = Field(
        3030,
        ge=0,
        le=65535,
        description="Port of the detector's `/metrics` (`0` disables); processes of a cluster "
        "on one host take the next ports, in process order.",
    )

    @property
    def cluster(self) -> list[str]:
        """host:port of every process of a detector cluster; empty for a single process."""
        return [a.strip() for a in (self.addresses or "").split(";") if a.strip()]

    @property
    def shards(self) -> int:
        """Shards of the model step in force (see ``model_shards``)."""
        return self.model_shards or max(len(self.cluster), 1) * self.workers


class ApiSettings(BaseSettings):
    """The review service (API)."""

    model_config = ENV

    api_host: str = Field("127.0.0.1", description="Address the API listens on.")
    api_port: int = Field(
        8000, ge=1, le=65535, description="Port the API listens on (its `/metrics` too)."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the review database, e.g. "
        "`postgresql+psycopg://user:pass@host/db` (default: SQLite file `<home>/review.db`).",
    )
    api_keys: SecretStr | None = Field(
        None,
        description="API keys as comma-separated `role:key` pairs (role: `scorer`, `viewer`, "
        "`analyst`, `admin`); `role:name:key` names the holder in the audit trail.",
    )
    api_keys_file: Path | None = Field(
        None, description="File with one `role:key` (or `role:name:key`) pair per line."
    )
    claim_ttl_seconds: float = Field(
        900.0, gt=0, description="How long an analyst's claim on an alert lasts."
    )
    outbox_interval_seconds: float = Field(
        1.0, gt=0, description="How often undelivered labels and control messages are retried."
    )
    score_timeout_ms: int = Field(
        200,
        ge=1,
        le=60_000,
        description="`POST /api/score`: how long to wait for the detector's decision before "
        "answering with the fallback.",
    )
    score_fallback: Literal["allow", "review"] = Field(
        "review",
        description="`POST /api/score`: the decision given (with `degraded: true`) when the "
        "detector does not answer in time.",
    )
    score_replies_keep_days: float = Field(
        7.0,
        gt=0,
        description="How long the decisions of synchronous requests are kept to answer the "
        "same request again.",
    )
    case_window_hours: float = Field(
        72.0,
        gt=0,
        le=24 * 366,
        description="A case is a card's alerts within this many hours before its newest "
        "alert (`GET /api/cases`).",
    )
    decisions_keep_days: float = Field(
        14.0,
        gt=0,
        description="How long the decisions read from the decisions topic are kept for the "
        "cases' timelines.",
    )
    detector_events_keep_days: float = Field(
        30.0,
        gt=0,
        description="How long the detector's events (attacks and drifts) are kept for the "
        "review page (`GET /api/detector-events`).",
    )


class LogSettings(BaseSettings):
    """Logs of every process."""

    model_config = ENV

    log_level: str = Field("INFO", description="Log level: DEBUG, INFO, WARNING, ERROR.")
    log_format: str = Field(
        "auto", description="console, json, or auto (console on a terminal, else json)."
    )
    log_requests: bool = Field(
        False,
        description="Log a line per request to the review service (method, path, status, "
        "ms); off, requests are only counted in its `/metrics` (and logged at DEBUG).",
    )


class Settings(BaseModel):
    """fraudstream settings, by group; each group reads its fields from the environment."""

    model_config = ConfigDict(extra="forbid")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings, description="Kafka")
    local: LocalSettings = Field(default_factory=LocalSettings, description="Local broker")
    scoring: ScoringSettings = Field(default_factory=ScoringSettings, description="Scoring")
    detector: DetectorSettings = Field(default_factory=DetectorSettings, description="Detector")
    api: ApiSettings = Field(default_factory=ApiSettings, description="API")
    logs: LogSettings = Field(default_factory=LogSettings, description="Logs")

    @property
    def recovery_path(self) -> Path:
        """The detector's recovery snapshots (default: <home>/recovery)."""
        own = self.detector.recovery_dir
        return own if own is not None else self.local.home / "recovery"

    @property
    def database(self) -> str:
        """The review database's URL (default: a SQLite file in the home)."""
        if self.api.database_url:
            return self.api.database_url
        return f"sqlite:///{self.local.home / 'review.db'}"


# Each group's settings, by its name in ``Settings``, in the order of the README's table
GROUPS: dict[str, type[BaseSettings]] = {
    "kafka": KafkaSettings,
    "local": LocalSettings,
    "scoring": ScoringSettings,
    "detector": DetectorSettings,
    "api": ApiSettings,
    "logs": LogSettings,
}
