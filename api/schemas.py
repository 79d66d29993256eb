"""The JSON the HTTP API reads and writes (and documents in its OpenAPI schema).

Request models refuse what the database could not hold or would choke on: overlong
strings and NUL characters (PostgreSQL text cannot contain them) are a 422 here rather
than a 500 later.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from api.fields import (
    BATCH_MAX,
    NAME_MAX,
    NOTE_MAX,
    AlertDecision,
    AlertStatus,
    ControlAction,
)
from detector.contracts import (
    EXPRESSION_MAX,
    CheckpointId,
    DecisionKind,
    DetectorEventKind,
    LabelKind,
    ListEntry,
    ModelSpec,
    ModelStatus,
    PolicyMode,
    Rule,
    RuleMode,
    ThresholdChange,
)

# No NUL and no other C0 control character except tab, newline and carriage return.
NO_CONTROL = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f]*$"

ErrorKind = Literal["not_found", "conflict", "invalid"]
# The HTTP status of each kind of refusal, for a whole request or one item of a batch.
ERROR_STATUS: dict[ErrorKind, int] = {"not_found": 404, "conflict": 409, "invalid": 422}

Note = Annotated[
    str,
    StringConstraints(max_length=NOTE_MAX, pattern=NO_CONTROL),
    Field(description=f"Why: free text, at most {NOTE_MAX} characters."),
]
AlertId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=NAME_MAX, pattern=NO_CONTROL),
    Field(description="The alert's id."),
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AlertItem(BaseModel):
    """One alert as the queue lists it."""

    model_config = ConfigDict(from_attributes=True)

    alert_id: str
    transaction_id: str
    card_id: str
    terminal_id: str
    amount: float
    currency: str | None
    transaction_time: datetime
    score: float
    decision: AlertDecision
    reasons: list[str] = Field(description="Why the detector alerted, strongest first.")
    model_name: str
    model_version: str
    created_at: datetime = Field(description="When the detector raised the alert.")
    received_at: datetime = Field(description="When the review service stored it.")
    status: AlertStatus = Field(description="An expired claim shows as open.")
    claimed_by: str | None
    claim_expires_at: datetime | None
    label: LabelKind | None
    note: str | None
    decided_by: str | None
    decided_at: datetime | None
    version: int = Field(description="Increases on every change.")


class AlertFacts(AlertItem):
    """An alert with what the detector saw: the transaction and the model's inputs."""

    transaction: dict[str, Any]
    features: dict[str, float]


class AlertPage(BaseModel):
    """A page of the queue and the number of alerts matching the filters."""

    items: list[AlertItem]
    total: int


class Event(BaseModel):
    """One entry of an alert's audit trail."""

    model_config = ConfigDict(from_attributes=True)

    at: datetime
    actor: str
    action: str
    details: dict[str, Any]


class CardAlert(BaseModel):
    """Another alert of the same card, for context."""

    model_config = ConfigDict(from_attributes=True)

    alert_id: str
    transaction_id: str
    amount: float
    currency: str | None
    transaction_time: datetime
    score: float
    decision: AlertDecision
    status: AlertStatus
    label: LabelKind | None
    created_at: datetime


class AlertDetail(BaseModel):
    """Everything an analyst needs to decide one alert."""

    item: AlertItem
    transaction: dict[str, Any] = Field(description="The transaction as the detector saw it.")
    reasons: list[str]
    features: dict[str, Any] = Field(description="The model's inputs, by name.")
    card_alerts: list[CardAlert] = Field(description="The card's other alerts, newest first.")
    history: list[Event] = Field(description="The audit trail, oldest first.")


class VerdictIn(_In):
    """An analyst's verdict on an alert."""

    label: LabelKind
    note: Note | None = None
    change: bool = Field(
        False,
        description="Set to change the verdict of an alert already decided with another "
        "label; without it that is a 409.",
    )
    version: int | None = Field(
        None, description="The alert version the analyst saw; 409 if it changed since."
    )


class VerdictItem(_In):
    """One verdict of a batch."""

    alert_id: AlertId
    label: LabelKind
    note: Note | None = None


class VerdictsIn(_In):
    """Several verdicts at once; each one succeeds or fails on its own."""

    items: list[VerdictItem] = Field(min_length=1, max_length=BATCH_MAX)
    change: bool = Field(False, description="Allow changing verdicts of decided alerts.")


class VerdictResult(BaseModel):
    """The outcome of one verdict of a batch."""

    alert_id: str
    ok: bool
    status: int = Field(description="The HTTP status this verdict alone would have had.")
    detail: str | None = None
    alert: AlertItem | None = None

    @property
    def error(self) -> str | None:
        """Why this verdict failed (``detail``), or None."""
        return None if self.ok else self.detail

    @property
    def error_kind(self) -> ErrorKind | None:
        """Which refusal this verdict met, or None."""
        kinds = {status: kind for kind, status in ERROR_STATUS.items()}
        return None if self.ok else kinds.get(self.status, "invalid")


class VerdictsOut(BaseModel):
    results: list[VerdictResult]


class QueueStats(BaseModel):
    """How the review queue is doing."""

    open: int = Field(description="Alerts waiting for an analyst (expired claims included).")
    claimed: int = Field(description="Alerts under a live claim.")
    decided: int = Field(description="Alerts with a verdict.")
    oldest_open_age_seconds: float | None = Field(description="None when nothing is open.")
    verdicts_last_hour: dict[str, int] = Field(description="Verdicts of the last hour by label.")
    outbox_pending: int = Field(description="Labels and control messages not yet in Kafka.")


class ModelInfo(BaseModel):
    """The latest status a model reported, and whether it is too old to trust."""

    status: ModelStatus
    received_at: datetime
    stale: bool = Field(description="No status for more than three status intervals.")


class ThresholdsIn(ThresholdChange):
    """New thresholds: alerts an hour (capacity), fixed scores, or shares of traffic."""

    model_config = ConfigDict(strict=False)


class DecidingModelIn(_In):
    """The model whose scores should make decisions (one of GET /api/models)."""

    model_name: Annotated[str, StringConstraints(min_length=1, max_length=NAME_MAX)]


class ModelSpecIn(ModelSpec):
    """A challenger to start: a new name, a classifier kind and its hyper-parameters."""

    model_config = ConfigDict(strict=False)


class RollbackIn(_In):
    """The checkpoint to restore (one of the model's ``checkpoints`` in GET /api/models)."""

    checkpoint_id: CheckpointId


EntryNote = Annotated[
    str,
    StringConstraints(max_length=256, pattern=r"^[^\x00-\x1f]*$"),
    Field(description="Why: shown in the reasons, at most 256 characters on one line."),
]


class RuleIn(_In):
    """A rule: a CEL expression over the transaction's fields and features, and what it
    decides when it matches (``shadow`` rules only count their hits)."""

    expression: Annotated[str, StringConstraints(min_length=1, max_length=EXPRESSION_MAX)] = Field(
        examples=["amount > 2000.0 && card_new_terminal == 1.0"]
    )
    outcome: DecisionKind
    mode: RuleMode = "active"
    expires_at: AwareDatetime | None = Field(None, description="In the future; then it stops.")
    note: EntryNote | None = None


class ListEntryIn(_In):
    """A value on an allow or block list, with an optional expiry and note."""

    expires_at: AwareDatetime | None = Field(None, description="In the future; then it stops.")
    note: EntryNote | None = None


class ModeIn(_In):
    """The global mode: ``normal``, ``review_only`` (no blocks: reviews instead) or
    ``monitor`` (everything allowed; reasons say what would have happened)."""

    mode: PolicyMode


class PolicyOut(BaseModel):
    """The rules, lists and mode in force, from the control history (expired ones left
    out); the detector's hits and block cap are in ``GET /api/models``."""

    mode: PolicyMode
    rules: list[Rule]
    lists: dict[str, list[ListEntry]]


class ControlAccepted(BaseModel):
    """The control message was stored and will be delivered to the detector."""

    control_id: str = Field(description="Echoed as last_control_id in the model's status.")
    action: ControlAction


class ControlEvent(BaseModel):
    """One admin change sent to the detector."""

    model_config = ConfigDict(from_attributes=True)

    control_id: str
    at: datetime
    actor: str
    action: str
    details: dict[str, Any]


class Me(BaseModel):
    """Who the presented key stands for."""

    name: str = Field(description="The name the audit trail shows for this key's actions.")
    role: Literal["viewer", "analyst", "admin"]


class ErrorOut(BaseModel):
    """Every error answer."""

    detail: str = Field(description="What went wrong, for a human.")


# --- Cases: a card's alerts within a window, its decisions and notes ---------------------

CardId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=NAME_MAX, pattern=NO_CONTROL),
    Field(description="The card's id, which is the case's id."),
]
CaseStatus = Literal["open", "decided"]


class _CaseFigures(BaseModel):
    """What a case's alerts add up to (``alerts`` is their count in a list, the alerts
    themselves in a case's detail)."""

    card_id: str
    open_alerts: int = Field(description="Alerts open or claimed.")
    max_score: float
    decision: AlertDecision = Field(description="The strongest among its alerts.")
    top_reason: str | None = Field(description="The first reason of the highest-scored alert.")
    amount_at_risk: float = Field(description="The sum of the open alerts' amounts.")
    currency: str | None = Field(description="None when mixed or unknown.")
    first_alert_at: datetime
    last_alert_at: datetime
    oldest_open_at: datetime | None = Field(description="When the oldest open alert came.")
    age_seconds: float | None = Field(description="How long the oldest open alert has waited.")
    status: CaseStatus = Field(description="open while any of its alerts is open or claimed.")
    claimed_by: str | None = Field(description="The holder of a live claim on one of its alerts.")


class CaseItem(_CaseFigures):
    """A case as the list of cases shows it."""

    alerts: int = Field(description="Alerts in the case.")


class CasePage(BaseModel):
    """A page of cases and the number of cases matching the filters."""

    items: list[CaseItem]
    total: int


class TimelinePoint(BaseModel):
    """One transaction of the card in the case's window, with its alert if it has one."""

    transaction_id: str
    transaction_time: datetime
    amount: float
    terminal_id: str
    score: float
    decision: DecisionKind
    alert_id: str | None
    status: AlertStatus | None = Field(description="The alert's status; None without alert.")
    label: LabelKind | None = Field(description="The alert's verdict.")


class CaseNote(BaseModel):
    """An analyst's note on a case."""

    model_config = ConfigDict(from_attributes=True)

    note_id: int
    author: str
    text: str
    created_at: datetime


class CaseDetail(_CaseFigures):
    """A case with its alerts, the card's decisions in the window and the notes."""

    window_hours: float = Field(description="The case window (`CASE_WINDOW_HOURS`).")
    alerts: list[AlertItem] = Field(description="The case's alerts, newest first.")
    timeline: list[TimelinePoint] = Field(
        description="The card's decisions in the window, oldest first."
    )
    notes: list[CaseNote] = Field(description="Oldest first.")


class CaseVerdictIn(_In):
    """One verdict for the open alerts of a case, or for some of its alerts."""

    label: LabelKind
    note: Note | None = None
    alert_ids: list[AlertId] | None = Field(
        None,
        min_length=1,
        max_length=BATCH_MAX,
        description="Only these alerts of the case (each must belong to it); "
        "default: every open alert of the case.",
    )


class FraudReportIn(_In):
    """A fraud the detector let through, reported by an analyst."""

    card_id: CardId = Field(description="The card of the transaction.")
    note: Note | None = None


class FraudReport(BaseModel):
    """A reported fraud: its label is on its way to the detector, its note on the case."""

    transaction_id: str
    card_id: str
    decision: DecisionKind = Field(description="What the detector decided then.")
    label: LabelKind
    origin: Literal["reported"]
    reported_by: str
    reported_at: datetime
    note_id: int = Field(description="The case note that records the report.")


class CaseNoteIn(_In):
    """A note on a case."""

    text: Annotated[
        str, StringConstraints(min_length=1, max_length=NOTE_MAX, pattern=NO_CONTROL)
    ] = Field(description=f"Free text, 1 to {NOTE_MAX} characters.")


# --- Detector events: attacks and drifts the detector noticed ----------------------------


class DetectorEventItem(BaseModel):
    """An attack or a drift the detector noticed (``DetectorEvent``), as the page lists it."""

    event_id: str = Field(description="The same change keeps its id: a later sighting replaces it.")
    kind: DetectorEventKind
    subject: str = Field(description="What moved: a statistic, a terminal, a feature.")
    summary: str = Field(description="One line for people: what moved, by how much, since when.")
    before: float | None = Field(description="The value in the reference period.")
    after: float = Field(description="The value now.")
    change: float = Field(description="How much it moved, in ``unit``.")
    unit: str = Field(description="What ``change`` counts: difference, ratio, cards, ...")
    since: datetime = Field(description="When the change began (transaction time).")
    detected_at: datetime = Field(description="When it was noticed (transaction time).")
    terminals: list[str] = Field(description="Terminals involved, the largest contributors first.")
    cards: list[str] = Field(description="Cards involved, the largest contributors first.")
    model_name: str | None = Field(description="The model whose scores or labels moved.")
    emitted_at: datetime = Field(description="When the detector published it.")
    received_at: datetime = Field(description="When the review service stored it (last).")


class DetectorEventPage(BaseModel):
    """A page of detector events and the number of events matching the filters."""

    items: list[DetectorEventItem]
    total: int
