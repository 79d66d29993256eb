"""The analysts' review queue: alerts in, verdicts out, every change audited.

Plain functions on a synchronous SQLAlchemy session, free of HTTP concerns, shared by the
routes, the Kafka bridge and the tests. Each takes a ``Context`` (session, clock, outbox
topics, observer) and keyword arguments, and returns the shapes of ``api.schemas``.

Data enters from Kafka (``ingest_alert``, ``ingest_status``, ``ingest_decisions``,
``ingest_detector_event``) and
from analysts and admins (``verdicts``, ``control``, ``cases``' notes); it leaves as reads
and as outbox rows (labels, control messages) written in the transaction of their change,
which the bridge's relay sends.
Refusals are ``ReviewError``s: ``NotFound``, ``Conflict`` or ``Invalid``.
"""

from api.review.alerts import (
    SORT_KEYS,
    AlertFilter,
    SortKey,
    card_context,
    get_alert,
    history,
    ingest_alert,
    list_alerts,
    queue_stats,
)
from api.review.cases import (
    CASE_STATUS_FILTERS,
    CaseFilter,
    CaseStatusFilter,
    add_note,
    check_decision,
    decide_case,
    get_case,
    ingest_decisions,
    list_cases,
    notes,
    purge_decisions,
)
from api.review.control import control_history, record_control
from api.review.detector_events import (
    DETECTOR_EVENT_KINDS,
    DetectorEventFilter,
    ingest_detector_event,
    list_detector_events,
    purge_detector_events,
)
from api.review.errors import Conflict, Invalid, NotFound, ReviewError
from api.review.model_status import get_model_status, ingest_status, model_statuses
from api.review.outbox import mark_failed, mark_sent, pending_outbox
from api.review.records import Context, Observer, Topics
from api.review.verdicts import claim, decide, decide_many, release, reopen, report_fraud

__all__ = [
    "CASE_STATUS_FILTERS",
    "DETECTOR_EVENT_KINDS",
    "SORT_KEYS",
    "AlertFilter",
    "CaseFilter",
    "CaseStatusFilter",
    "Conflict",
    "Context",
    "DetectorEventFilter",
    "Invalid",
    "NotFound",
    "Observer",
    "ReviewError",
    "SortKey",
    "Topics",
    "add_note",
    "card_context",
    "check_decision",
    "claim",
    "control_history",
    "decide",
    "decide_case",
    "decide_many",
    "get_alert",
    "get_case",
    "get_model_status",
    "history",
    "ingest_alert",
    "ingest_decisions",
    "ingest_detector_event",
    "ingest_status",
    "list_alerts",
    "list_cases",
    "list_detector_events",
    "mark_failed",
    "mark_sent",
    "model_statuses",
    "notes",
    "pending_outbox",
    "purge_decisions",
    "purge_detector_events",
    "queue_stats",
    "record_control",
    "release",
    "reopen",
    "report_fraud",
]
