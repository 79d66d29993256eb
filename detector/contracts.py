"""Event contracts: the JSON that travels on fraudstream's Kafka topics.

Every topic's records are one of these models, serialised with ``model_dump_json``.
Records are keyed by ``card_id`` so that a card's events stay in order on one partition.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=64)]

DecisionKind = Literal["allow", "review", "block"]
LabelKind = Literal["fraud", "legit"]

# Alert ids are UUIDv5 of the card and transaction ids in this namespace: a replay or
# restart that decides a transaction again produces the very same alert id.
ALERT_NAMESPACE = uuid.UUID("5b0c7c39-5d7e-4bfa-9a59-0b8f2c6f3e11")


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Transaction(_Contract):
    """A card payment as published by a payment system on ``transactions``."""

    transaction_id: Identifier
    timestamp: AwareDatetime = Field(description="RFC 3339 with a UTC offset.")
    card_id: Identifier
    terminal_id: Identifier
    amount: float = Field(gt=0, allow_inf_nan=False)
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = None
    merchant_category: ShortText | None = None
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] | None = None
    channel: ShortText | None = None
    device_id: Identifier | None = None
    metadata: dict[ShortText, Annotated[str, StringConstraints(max_length=256)]] | None = Field(
        None, max_length=32
    )

    @field_validator("amount", mode="before")
    @classmethod
    def _amount_is_a_number(cls, value: object) -> object:
        # Strict mode already refuses strings; also refuse booleans, which JSON
        # parsers would otherwise read as 0 and 1.
        if isinstance(value, bool):
            raise ValueError("amount must be a number, not a boolean")
        if isinstance(value, int):
            try:
                return float(value)
            except OverflowError:
                raise ValueError("amount is too large for a number") from None
        return value

    @property
    def epoch_seconds(self) -> float:
        return self.timestamp.timestamp()


class Decision(_Contract):
    """The verdict on one transaction, published on ``decisions``."""

    transaction_id: Identifier
    card_id: Identifier
    terminal_id: Identifier
    amount: float
    score: float = Field(ge=0, le=1)
    decision: DecisionKind
    reasons: list[str] = Field(description="Human-readable, strongest first.")
    model_name: str
    model_version: str
    transaction_time: AwareDatetime
    scored_at: AwareDatetime
    degraded: bool = Field(
        False,
        description=(
            "True when the decision was made without the full system: by rules alone (the"
            " model's score was unusable) or by the synchronous path's fallback (timeout)."
        ),
    )
    exploration: bool = Field(
        False,
        description="True when the allowed transaction was also put up for review, as part "
        "of the exploration sample (its alert has decision review).",
    )


class Alert(_Contract):
    """A transaction an analyst should look at (review or block), on ``alerts``."""

    alert_id: str
    transaction: Transaction
    score: float = Field(ge=0, le=1)
    decision: Literal["review", "block"]
    reasons: list[str]
    features: dict[str, float]
    model_name: str
    model_version: str
    created_at: AwareDatetime
    exploration: bool = Field(
        False,
        description="Put up for review as part of the exploration sample (a random share of "
        "the allowed transactions), not for its score; the payment was allowed.",
    )


LabelOrigin = Literal["alerted", "exploration", "chargeback", "reported"]


def default_origin(source: str) -> LabelOrigin:
    """The origin of a label that does not say it: a chargeback's, else an alert's."""
    return "chargeback" if source == "chargeback" else "alerted"


class Label(_Contract):
    """The truth about a transaction: an analyst verdict or a chargeback, on ``labels``.

    ``origin`` says how the transaction came to be labelled, and so which quality
    figures the label may stand in: ``alerted`` (a verdict on an alert), ``exploration``
    (a verdict on the exploration sample), ``chargeback``, ``reported`` (an analyst
    reported a fraud the model let through). Producers that do not send it get the
    origin their ``source`` implies (``default_origin``).
    """

    transaction_id: Identifier
    card_id: Identifier
    label: LabelKind
    source: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$")] = Field(
        description="analyst, chargeback, or another lower-case source name."
    )
    labeled_at: AwareDatetime
    origin: LabelOrigin | None = Field(
        None,
        description="alerted, exploration, chargeback or reported; when missing (or null): "
        "chargeback for source chargeback, else alerted.",
    )

    @model_validator(mode="after")
    def _origin_of_source(self) -> Label:
        if self.origin is None:  # frozen: set once, while the label is being made
            self.__dict__["origin"] = default_origin(self.source)
        return self

    @property
    def provenance(self) -> LabelOrigin:
        """``origin``, also for a label unpickled from before it had one."""
        origin: LabelOrigin | None = self.__dict__.get("origin")
        return origin if origin is not None else default_origin(self.source)


class RejectReason(StrEnum):
    """Why a record went to the dead-letter topic (a bounded set, fit for metric labels)."""

    OVERSIZE = "oversize"
    NOT_JSON = "not_json"
    INVALID = "invalid"
    FUTURE_TIMESTAMP = "future_timestamp"
    DUPLICATE = "duplicate"
    UNKNOWN_TRANSACTION = "unknown_transaction"
    KAFKA_ERROR = "kafka_error"
    INTERNAL_ERROR = "internal_error"


# A dead letter keeps at most this much of the record's value and key, so that it always
# fits a broker's default 1 MB record limit (base64 makes it a third larger); larger
# values keep their size and SHA-256 digest, and their source coordinates find the rest.
DEAD_LETTER_VALUE_LIMIT = 128 * 1024
DEAD_LETTER_KEY_LIMIT = 4 * 1024
DEAD_LETTER_ERROR_LIMIT = 2000


class DeadLetter(_Contract):
    """A record fraudstream could not use, with the reason, on the DLQ topic.

    The original bytes are kept whole up to ``DEAD_LETTER_VALUE_LIMIT``; beyond that a
    prefix (``truncated`` is true), always with the size and digest of the whole value.
    """

    reason: RejectReason
    error: str
    source_topic: str | None
    partition: int | None
    offset: int | None
    key_base64: str | None
    value_base64: str
    value_size: int = Field(0, description="Bytes in the original value.")
    value_sha256: str = Field("", description="Hex SHA-256 of the original value.")
    truncated: bool = Field(False, description="True when value_base64 holds only a prefix.")
    failed_at: AwareDatetime

    @classmethod
    def of(
        cls,
        reason: RejectReason,
        error: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> DeadLetter:
        value = value or b""
        return cls(
            reason=reason,
            error=error[:DEAD_LETTER_ERROR_LIMIT],
            source_topic=topic,
            partition=partition,
            offset=offset,
            key_base64=(
                base64.b64encode(key[:DEAD_LETTER_KEY_LIMIT]).decode() if key is not None else None
            ),
            value_base64=base64.b64encode(value[:DEAD_LETTER_VALUE_LIMIT]).decode(),
            value_size=len(value),
            value_sha256=hashlib.sha256(value).hexdigest(),
            truncated=len(value) > DEAD_LETTER_VALUE_LIMIT,
            failed_at=datetime.now(UTC),
        )

    @property
    def value(self) -> bytes:
        return base64.b64decode(self.value_base64)


class ModelQuality(_Contract):
    """Online quality of one model, from the labels received over a recent window.

    Each labelled transaction counts once, with the score the model gave it when it was
    decided. A figure is ``None`` until the window holds enough labels for it: ROC AUC
    and average precision ``min_frauds`` frauds and ``min_legit`` legitimate ones, alert
    recall ``min_frauds`` frauds, alert precision ``min_alerts`` labelled alerts. The
    counts say why, and how many labels a figure stands on.
    """

    window: int = Field(description="Labelled transactions in the window.")
    frauds: int = Field(description="Frauds among them.")
    legit: int = Field(0, ge=0, description="Legitimate transactions among them.")
    alerts: int = Field(
        0, ge=0, description="Labelled transactions among them that were alerted (review or block)."
    )
    sources: dict[str, int] = Field(
        default_factory=dict, description="The window's labels by source (analyst, chargeback...)."
    )
    min_frauds: int = Field(0, ge=0, description="Frauds needed for AUC, AP and recall.")
    min_legit: int = Field(0, ge=0, description="Legitimate labels needed for AUC and AP.")
    min_alerts: int = Field(0, ge=0, description="Labelled alerts needed for alert precision.")
    auc: float | None = Field(description="ROC AUC of the scores.")
    average_precision: float | None
    alert_precision: float | None = Field(
        description="Share of the window's alerted transactions (review or block) that were fraud."
    )
    alert_recall: float | None = Field(description="Share of the window's frauds alerted.")
    by_origin: dict[str, OriginQuality] = Field(
        default_factory=dict,
        description="The window's labels by origin (alerted, exploration, chargeback, "
        "reported), each with its own figures.",
    )
    min_exploration: int = Field(
        0, ge=0, description="Exploration labels needed for the whole-traffic estimates."
    )
    exploration_share: float | None = Field(
        None,
        description="Share of the allowed transactions the exploration sample took (lower "
        "than the setting when the hourly cap bit); null before any was allowed.",
    )
    allowed_fraud_rate: float | None = Field(
        None,
        description="Estimated share of frauds among the allowed transactions: the frauds "
        "among the exploration labels (each standing for 1/exploration_share allowed "
        "transactions).",
    )
    estimated_recall: float | None = Field(
        None,
        description="Estimated share of all frauds alerted, over the whole traffic: the "
        "alerted frauds (alert share x alert precision) against those plus the allowed "
        "frauds (allowed share x allowed_fraud_rate).",
    )


class OriginQuality(_Contract):
    """The quality figures over the labels of one origin in the window."""

    labels: int = Field(ge=0)
    frauds: int = Field(ge=0)
    alerts: int = Field(ge=0, description="Labelled transactions among them that were alerted.")
    auc: float | None = Field(description="ROC AUC of the scores (null below the minimums).")
    alert_precision: float | None


class QualityPoint(_Contract):
    """One point of a model's quality trend (figures null below the minimum)."""

    at: AwareDatetime
    window: int = Field(ge=0, description="Labelled transactions in the window then.")
    frauds: int = Field(ge=0)
    legit: int = Field(ge=0)
    alerts: int = Field(ge=0, description="Labelled alerts in the window then.")
    auc: float | None
    alert_precision: float | None
    alert_recall: float | None


class ModelStatus(_Contract):
    """A periodic snapshot of one model, on ``model-status`` (keyed by model name)."""

    model_name: str
    model_version: str
    deciding: bool = Field(description="True for the model whose scores make decisions.")
    transactions_scored: int
    decisions: dict[str, int]
    labels_learned: dict[str, int] = Field(
        description="By class: fraud and legit, net of verdicts changed later."
    )
    labels_by_source: dict[str, int]
    classifier_weight: float
    quality: ModelQuality
    threshold_mode: Literal["capacity", "volume", "fixed"]
    review_threshold: float
    block_threshold: float
    review_share: float | None = Field(
        description="Volume mode: share of traffic alerted; capacity mode: the share the "
        "capacity allows at the current traffic."
    )
    block_share: float | None = Field(description="Volume mode: share of traffic blocked.")
    review_capacity_per_hour: float | None = Field(
        None, description="Capacity mode: the alerts an hour the thresholds aim at."
    )
    alerts_last_hour: int | None = Field(
        None, description="Capacity mode: alerts (review or block) in the last hour of event time."
    )
    last_control_id: str | None = Field(description="The last control message applied.")
    last_label_at: AwareDatetime | None = Field(description="When the last label was learned.")
    emitted_at: AwareDatetime
    policy: PolicyStatus | None = Field(
        None, description="Rules, lists and safety valves in force (the deciding model's)."
    )
    calibration_labels: int = Field(
        0, ge=0, description="Labels the calibration of scores to fraud probabilities learned."
    )
    calibration_error: float | None = Field(
        None,
        description="Expected calibration error of the published scores over the labels "
        "learned, each judged before it was learned (null before labels).",
    )
    trend: list[QualityPoint] = Field(
        default_factory=list,
        description="The quality over time, oldest first: a point per status period with "
        "new labels, the last 48.",
    )
    spec: ModelSpec | None = Field(
        None, description="What the model is: its classifier kind and hyper-parameters."
    )
    checkpoints: list[CheckpointInfo] = Field(
        default_factory=list,
        description="Saved states the model can be rolled back to, oldest first.",
    )


UnitFloat = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Share = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
Capacity = Annotated[float, Field(gt=0, le=1_000_000, allow_inf_nan=False)]


class ThresholdChange(_Contract):
    """New decision thresholds: alerts an hour (capacity mode), fixed scores, or shares of
    traffic (volume mode)."""

    mode: Literal["capacity", "volume", "fixed"]
    review_threshold: UnitFloat | None = Field(None, description="Fixed mode: review at or above.")
    block_threshold: UnitFloat | None = Field(
        None,
        description="Fixed mode: block at or above; capacity mode (optional): block an alert "
        "at or above (1.0: never; default: the block threshold in force).",
    )
    review_share: Share | None = Field(None, description="Volume mode: share alerted.")
    block_share: Share | None = Field(None, description="Volume mode: share blocked.")
    review_capacity_per_hour: Capacity | None = Field(
        None, description="Capacity mode: alerts (review or block) an hour, for the whole team."
    )

    @model_validator(mode="after")
    def _complete(self) -> ThresholdChange:
        if self.mode == "capacity":
            if self.review_capacity_per_hour is None:
                raise ValueError("capacity mode needs review_capacity_per_hour")
        elif self.mode == "fixed":
            if self.review_threshold is None or self.block_threshold is None:
                raise ValueError("fixed mode needs review_threshold and block_threshold")
            if self.block_threshold < self.review_threshold:
                raise ValueError("block_threshold must be at least review_threshold")
        else:
            if self.review_share is None or self.block_share is None:
                raise ValueError("volume mode needs review_share and block_share")
            if self.block_share > self.review_share:
                raise ValueError("block_share must be at most review_share")
        return self


# --- rules, lists and safety valves (detector/policy.py applies them) ---------------------

PolicyMode = Literal["normal", "review_only", "monitor"]
RuleMode = Literal["active", "shadow"]
# The fields a list can hold, and the lists: ``allow.card_id``, ``block.country``, ...
LIST_FIELDS = ("card_id", "terminal_id", "device_id", "country")
LIST_NAMES = tuple(f"{kind}.{name}" for kind in ("allow", "block") for name in LIST_FIELDS)
ListName = Literal[
    "allow.card_id",
    "allow.terminal_id",
    "allow.device_id",
    "allow.country",
    "block.card_id",
    "block.terminal_id",
    "block.device_id",
    "block.country",
]
RuleName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
EXPRESSION_MAX = 2000
Note = Annotated[str, StringConstraints(max_length=256, pattern=r"^[^\x00-\x1f]*$")]


class Rule(_Contract):
    """A rule: a CEL expression over the transaction's fields and its features.

    An ``active`` rule that matches decides ``outcome`` (after the allow and block
    lists, before the model); a ``shadow`` rule only counts its hits.
    """

    name: RuleName
    expression: Annotated[str, StringConstraints(min_length=1, max_length=EXPRESSION_MAX)]
    outcome: DecisionKind
    mode: RuleMode = "active"
    expires_at: AwareDatetime | None = Field(None, description="Stops applying then.")
    note: Note | None = None
    changed_by: str
    changed_at: AwareDatetime


class ListEntry(_Contract):
    """A value on an allow or block list, e.g. card ``card-17`` on ``block.card_id``."""

    list_name: ListName
    value: Identifier
    expires_at: AwareDatetime | None = Field(None, description="Stops applying then.")
    note: Note | None = None
    changed_by: str
    changed_at: AwareDatetime

    @model_validator(mode="after")
    def _country_code(self) -> ListEntry:
        # As transactions carry it: a value in another form would never match.
        if self.list_name.endswith(".country") and not re.fullmatch(r"[A-Z]{2}", self.value):
            raise ValueError(f"a country is two capital letters (ISO 3166-1), not {self.value!r}")
        return self


class RuleStatus(_Contract):
    """A rule in force, with its hits since the detector's state began."""

    rule: Rule
    hits: int
    errors: int = Field(description="Evaluations that failed (counted as not matched).")


class PolicyStatus(_Contract):
    """The rules, lists and safety valves in force, reported with the deciding model."""

    mode: PolicyMode
    rules: list[RuleStatus]
    list_sizes: dict[str, int] = Field(description="Entries in force, by list.")
    list_hits: dict[str, int] = Field(description="Decisions a list entry made, by list.")
    max_block_share: float = Field(description="The cap on blocks over the window.")
    block_window: int = Field(description="Decisions in the block cap's window.")
    block_share: float = Field(description="Share of blocks in the window now.")
    block_cap_tripped: bool = Field(description="Blocks are turned into reviews now.")
    blocks_capped: int = Field(description="Blocks turned into reviews by the cap so far.")
    degraded: int = Field(description="Decisions made by rules alone (unusable model score).")


# --- model versions, run-time challengers and checkpoints (detector/challengers.py) -------

ClassifierKind = Literal["logreg", "tree", "forest"]
ModelName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
CheckpointId = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,9}-[0-9]{1,12}$")]
# The hyper-parameters each classifier kind takes (``warmup_frauds``: every kind).
KIND_PARAMETERS: dict[str, tuple[str, ...]] = {
    "logreg": ("learning_rate", "l2"),
    "tree": ("grace_period", "seed"),
    "forest": ("n_models", "grace_period", "seed"),
}


class HyperParameters(_Contract):
    """A challenger's hyper-parameters: a closed set of typed values, each optional (the
    default of the kind when left out), each valid for some classifier kinds only."""

    warmup_frauds: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Fraud labels at which classifier and detector "
        "weigh the same (every kind; default: the setting).",
    )
    learning_rate: float | None = Field(
        None, gt=0, le=10, allow_inf_nan=False, description="logreg: AdaGrad learning rate."
    )
    l2: float | None = Field(
        None, ge=0, le=10, allow_inf_nan=False, description="logreg: L2 regularisation."
    )
    grace_period: int | None = Field(
        None, ge=10, le=100_000, description="tree, forest: labels between split attempts."
    )
    n_models: int | None = Field(None, ge=1, le=50, description="forest: trees in the forest.")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="tree, forest: random seed.")


class ModelSpec(_Contract):
    """A model to run: its name, classifier kind and hyper-parameters."""

    name: ModelName = Field(description="Lower-case letters, digits, '.', '_' and '-'.")
    kind: ClassifierKind
    params: HyperParameters = Field(default_factory=HyperParameters)

    @model_validator(mode="after")
    def _params_of_kind(self) -> ModelSpec:
        allowed = ("warmup_frauds", *KIND_PARAMETERS[self.kind])
        given = self.params.model_dump(exclude_none=True)
        wrong = [name for name in given if name not in allowed]
        if wrong:
            raise ValueError(
                f"{self.kind} takes no {', '.join(wrong)}; its hyper-parameters are "
                f"{', '.join(allowed)}"
            )
        return self


class CheckpointInfo(_Contract):
    """A saved state of a model (scorer and calibration) it can be rolled back to."""

    checkpoint_id: CheckpointId = Field(description="<generation>-<labels learned>.")
    saved_at: AwareDatetime
    labels_learned: int = Field(ge=0, description="Labels the model had learned then.")
    model_version: str = Field(description="The model's version then.")


class Control(_Contract):
    """An admin's change to the running detector, on ``control`` (keyed ``"model"``).

    The detector applies it without a restart and reports ``last_control_id`` in its next
    ``ModelStatus``.
    """

    control_id: str = Field(description="Unique id, echoed in model status.")
    action: Literal[
        "set_thresholds",
        "set_deciding_model",
        "put_rule",
        "delete_rule",
        "put_list_entry",
        "delete_list_entry",
        "set_mode",
        "add_model",
        "retire_model",
        "rollback_model",
    ]
    thresholds: ThresholdChange | None = None
    model_name: str | None = Field(
        None,
        description="set_deciding_model: the model to use; retire_model, rollback_model: "
        "the model.",
    )
    model_spec: ModelSpec | None = Field(None, description="add_model: the new challenger.")
    checkpoint_id: CheckpointId | None = Field(
        None, description="rollback_model: the checkpoint to restore (see ModelStatus)."
    )
    rule: Rule | None = Field(None, description="put_rule: the rule, new or replacing.")
    rule_name: RuleName | None = Field(None, description="delete_rule: the rule to remove.")
    list_entry: ListEntry | None = Field(None, description="put_list_entry: the entry.")
    list_name: ListName | None = Field(None, description="delete_list_entry: the list.")
    list_value: Identifier | None = Field(None, description="delete_list_entry: the value.")
    mode: PolicyMode | None = Field(None, description="set_mode: the global mode.")
    requested_by: str
    requested_at: AwareDatetime

    @model_validator(mode="after")
    def _complete(self) -> Control:
        if self.action == "set_thresholds" and self.thresholds is None:
            raise ValueError("set_thresholds needs thresholds")
        if self.action == "set_deciding_model" and not self.model_name:
            raise ValueError("set_deciding_model needs model_name")
        needs = {
            "add_model": ("model_spec",),
            "retire_model": ("model_name",),
            "rollback_model": ("model_name", "checkpoint_id"),
            "put_rule": ("rule",),
            "delete_rule": ("rule_name",),
            "put_list_entry": ("list_entry",),
            "delete_list_entry": ("list_name", "list_value"),
            "set_mode": ("mode",),
        }.get(self.action, ())
        missing = [name for name in needs if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{self.action} needs {' and '.join(missing)}")
        return self


ModelQuality.model_rebuild()
ModelStatus.model_rebuild()


def alert_id_for(card_id: str, transaction_id: str) -> str:
    """The deterministic alert id of a card's transaction.

    The card is part of it: two payment systems may use the same transaction id for
    different cards, and each transaction is its own alert.
    """
    return str(uuid.uuid5(ALERT_NAMESPACE, json.dumps([card_id, transaction_id])))


DetectorEventKind = Literal[
    "score_shift", "terminal_burst", "card_testing", "fraud_rate_change", "feature_shift"
]
# Cards or terminals an event names at most (the largest contributors first).
EVENT_SUBJECTS_LIMIT = 50

# Detector event ids are UUIDv5 of the event's kind, subject and start in this namespace:
# the same change noticed again (a replay, a restart) has the same id.
EVENT_NAMESPACE = uuid.UUID("a7f1e9a2-1c0b-4d5e-8f3a-6b2d9c4e7f10")


class DetectorEvent(_Contract):
    """Something the detector noticed on its own: an attack or a drift, on ``detector-events``.

    ``kind`` says what: ``score_shift`` (the distribution of the deciding model's scores
    moved), ``terminal_burst`` (many distinct cards at one terminal in minutes),
    ``card_testing`` (many small amounts at one terminal in minutes), ``fraud_rate_change``
    (the share of frauds among new labels moved), ``feature_shift`` (a feature's
    distribution moved). ``subject`` names what moved (a statistic, a terminal, a
    feature); ``before`` and ``after`` are its value in the reference and now, ``change``
    how much it moved (``after - before`` unless ``unit`` says otherwise); ``since`` is
    when, in transaction time, the change began, and ``detected_at`` when it was noticed.
    Keyed by the terminal for terminal events, else by ``kind``.
    """

    event_id: str = Field(description="Deterministic: the same change keeps its id.")
    kind: DetectorEventKind
    subject: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    summary: Annotated[str, StringConstraints(min_length=1, max_length=512)] = Field(
        description="One line for people: what moved, by how much, since when."
    )
    before: float | None = Field(description="The value in the reference period.")
    after: float = Field(description="The value now.")
    change: float = Field(description="How much it moved, in ``unit``.")
    unit: Annotated[str, StringConstraints(min_length=1, max_length=32)] = Field(
        description="What ``change`` counts: difference, ratio, cards, transactions, ..."
    )
    since: AwareDatetime = Field(description="When the change began (transaction time).")
    detected_at: AwareDatetime = Field(description="When it was noticed (transaction time).")
    terminals: list[Identifier] = Field(
        default_factory=list, max_length=EVENT_SUBJECTS_LIMIT, description="Terminals involved."
    )
    cards: list[Identifier] = Field(
        default_factory=list, max_length=EVENT_SUBJECTS_LIMIT, description="Cards involved."
    )
    model_name: str | None = Field(None, description="The model whose scores or labels moved.")
    emitted_at: AwareDatetime


def event_id_for(kind: str, subject: str, since: datetime) -> str:
    """The deterministic id of a detector event."""
    return str(uuid.uuid5(EVENT_NAMESPACE, json.dumps([kind, subject, since.isoformat()])))


class ScoreRequest(_Contract):
    """A transaction to decide while its payment system waits, on ``score-requests``.

    Published by the API for ``POST /api/score`` (keyed by ``card_id``); the detector
    decides the transaction as if it came on ``transactions`` (the same state, one
    decision) and answers on ``score-replies``.
    """

    request_id: Identifier = Field(description="Unique per request; echoed in the reply.")
    transaction: Transaction
    requested_at: AwareDatetime


class ScoreReply(_Contract):
    """The detector's answer to a ``ScoreRequest``, on ``score-replies`` (keyed by card_id).

    ``decided``: ``decision`` is the transaction's decision, the very one published on
    ``decisions``. ``duplicate``: the transaction was decided before (from an earlier
    request, or from ``transactions``), and ``decision`` is None.
    """

    request_id: Identifier
    card_id: Identifier
    transaction_id: Identifier
    status: Literal["decided", "duplicate"]
    decision: Decision | None = None
    replied_at: AwareDatetime

    @model_validator(mode="after")
    def _complete(self) -> ScoreReply:
        if (self.status == "decided") != (self.decision is not None):
            raise ValueError("a decided reply carries its decision, a duplicate none")
        return self
