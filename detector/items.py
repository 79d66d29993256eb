"""What flows between the keyed steps: card -> terminal -> model -> outputs.

Transactions go card -> terminal -> model and come out as ``Scored``. Labels go the same
way: the card knows which terminal a transaction used, the terminal keeps the features
recorded when the transaction was scored, and the model learns from those features,
however late the label is. Whatever a step cannot use comes out as ``Rejected``, for the
dead-letter topic.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import PrivateAttr

from detector.contracts import (
    Alert,
    Control,
    Decision,
    DecisionKind,
    DetectorEvent,
    Label,
    RejectReason,
    ScoreRequest,
    Transaction,
    alert_id_for,
)
from models import HybridScore

if TYPE_CHECKING:
    from detector.policy import PolicyOutcome


@dataclass(frozen=True, slots=True)
class Origin:
    """The Kafka record an event came from, kept for its dead letter if one is needed."""

    topic: str | None
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None


class RequestedTransaction(Transaction):
    """A transaction of a ``ScoreRequest``: the very same transaction for every step, with
    the request's id riding along (not a field: never serialised), so that its decision
    is also the request's reply (``detector.flow.outputs``)."""

    _request_id: str = PrivateAttr("")

    @classmethod
    def of(cls, request: ScoreRequest) -> RequestedTransaction:
        tx = request.transaction
        requested = cls.model_construct(tx.model_fields_set, **dict(tx))
        requested._request_id = request.request_id
        return requested

    @property
    def request_id(self) -> str:
        return self._request_id


@dataclass(slots=True)
class CardFeatured:
    """A transaction with its card features (card step -> terminal step)."""

    transaction: Transaction
    features: dict[str, float]


@dataclass(slots=True)
class Featured:
    """A transaction with all its features (terminal step -> model step)."""

    transaction: Transaction
    features: dict[str, float]
    # the terminal is in a burst (``detector.events``): why its transactions go to review
    burst: str | None = None


@dataclass(slots=True)
class RoutedLabel:
    """A label with what the card knew of its transaction (card step -> terminal step)."""

    label: Label
    terminal_id: str
    transaction_time: float
    origin: Origin | None = None


@dataclass(slots=True)
class LabelToLearn:
    """Features recorded at scoring time and the truth about them (-> model step).

    With several model shards, every shard learns every label; ``home`` marks the copy
    in the shard that scored the transaction, which counts it (see ``to_shards``).
    """

    transaction_id: str
    is_fraud: bool
    source: str
    features: dict[str, float]
    home: bool = True
    # how the transaction came to be labelled (``Label.origin``); "" for presumed labels
    origin: str = ""
    labeled_at: float | None = None  # epoch seconds, for an explicit label


@dataclass(slots=True)
class Noticed:
    """An attack or a drift a step noticed (-> ``detector-events``)."""

    event: DetectorEvent


@dataclass(slots=True)
class Rejected:
    """A valid-looking event the core cannot use; it goes to the dead-letter topic.

    ``origin`` is the Kafka record of the event, when known: its dead letter keeps the
    original bytes and coordinates; otherwise ``payload`` is the event re-serialised.
    ``control`` marks a rejected control message (its dead letter names the control
    topic).
    """

    reason: RejectReason
    error: str
    payload: bytes
    control: bool = False
    origin: Origin | None = None


@dataclass(slots=True)
class Scored:
    """The outcome for one transaction: what the dataflow publishes."""

    transaction: Transaction
    features: dict[str, float]
    parts: HybridScore
    decision: DecisionKind
    reasons: list[str]
    model_name: str
    model_version: str
    scored_at: datetime
    # The decision already published for this transaction before a crash, if any: what
    # is published again, byte for byte (see ``of_record``).
    record: bytes | None = None
    # What the rules, lists and safety valves did (None: decided by the model alone).
    policy: PolicyOutcome | None = None
    # An allowed transaction also put up for review (``detector.exploration``).
    exploration: bool = False

    @property
    def degraded(self) -> bool:
        """Decided without a usable model score (by rules and lists alone)."""
        return self.policy is not None and self.policy.degraded

    @property
    def score(self) -> float:
        if self.record is not None:
            return self.to_decision().score
        return min(1.0, max(0.0, self.parts.score))

    def of_record(self, record: bytes) -> Scored:
        """This outcome as the decision of record ``record`` (a published ``Decision``)
        says: a transaction decided again after a crash keeps the decision it had."""
        published = Decision.model_validate_json(record)
        return dataclasses.replace(
            self,
            decision=published.decision,
            reasons=list(published.reasons),
            model_name=published.model_name,
            model_version=published.model_version,
            scored_at=published.scored_at,
            record=record,
            exploration=published.exploration,
        )

    def to_decision(self) -> Decision:
        if self.record is not None:
            return Decision.model_validate_json(self.record)
        tx = self.transaction
        return Decision(
            transaction_id=tx.transaction_id,
            card_id=tx.card_id,
            terminal_id=tx.terminal_id,
            amount=tx.amount,
            score=self.score,
            decision=self.decision,
            reasons=self.reasons,
            model_name=self.model_name,
            model_version=self.model_version,
            transaction_time=tx.timestamp,
            scored_at=self.scored_at,
            degraded=self.degraded,
            exploration=self.exploration,
        )

    def to_alert(self) -> Alert | None:
        """The alert of a review or block, or of an allowed transaction of the exploration
        sample (a review: the payment stays allowed)."""
        if self.decision == "allow" and not self.exploration:
            return None
        return Alert(
            alert_id=alert_id_for(self.transaction.card_id, self.transaction.transaction_id),
            transaction=self.transaction,
            score=self.score,
            decision="review" if self.decision == "allow" else self.decision,
            reasons=self.reasons,
            features=self.features,
            model_name=self.model_name,
            model_version=self.model_version,
            created_at=self.scored_at,
            exploration=self.exploration,
        )


@dataclass(slots=True)
class Learned:
    """A label the model learned from."""

    transaction_id: str
    is_fraud: bool
    source: str


@dataclass(slots=True)
class ControlApplied:
    """A control message the model step applied (the dataflow then reports its status)."""

    control: Control


CardOut = CardFeatured | RoutedLabel | Rejected
TerminalIn = CardFeatured | RoutedLabel
TerminalOut = Featured | LabelToLearn | Rejected | Noticed
ModelIn = Featured | LabelToLearn | Control
ModelOut = Scored | Learned | ControlApplied | Rejected | Noticed
