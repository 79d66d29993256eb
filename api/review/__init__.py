"""The analysts' review queue: alerts in, verdicts out, every change audited.

Plain functions on a synchronous SQLAlchemy session, free of HTTP concerns, shared by the
routes, the Kafka bridge and the tests. Each takes a ``Context`` (session, clock, outbox
topics, observer) and keyword arguments, and returns the shapes of ``api.schemas``.

Data enters from Kafka (``ingest_alert``, ``ingest_status``) and from analysts and admins
(``verdicts``, ``control``); it leaves as reads and as outbox rows (labels, control
messages) written in the transaction of their change, which the bridge's relay sends.
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
from api.review.control import control_history, record_control
from api.review.errors import Conflict, Invalid, NotFound, ReviewError
from api.review.model_status import get_model_status, ingest_status, model_statuses
from api.review.outbox import mark_failed, mark_sent, pending_outbox
from api.review.records import Context, Observer, Topics
from api.review.verdicts import claim, decide, decide_many, release, reopen

__all__ = [
    "SORT_KEYS",
    "AlertFilter",
    "Conflict",
    "Context",
    "Invalid",
    "NotFound",
    "Observer",
    "ReviewError",
    "SortKey",
    "Topics",
    "card_context",
    "claim",
    "control_history",
    "decide",
    "decide_many",
    "get_alert",
    "get_model_status",
    "history",
    "ingest_alert",
    "ingest_status",
    "list_alerts",
    "mark_failed",
    "mark_sent",
    "model_statuses",
    "pending_outbox",
    "queue_stats",
    "record_control",
    "release",
    "reopen",
]
