"""What every part of the review service agrees on: the values each enumeration may take
and the longest text each stored field may hold.

Enumerations the detector publishes come from its contracts (``detector.contracts``);
those that exist only here (an alert's review status, the audit actions) are declared
once below. The tables, the HTTP schemas, the review rules and the metrics all use these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

from detector.contracts import Alert, Control, LabelKind

if TYPE_CHECKING:
    # Type checkers see plain text; at run time (pydantic, FastAPI, the tables' CHECK
    # constraints) these are the contracts' own literals.
    AlertDecision = str
    ControlAction = str
else:
    AlertDecision = Alert.model_fields["decision"].annotation
    ControlAction = Control.model_fields["action"].annotation

AlertStatus = Literal["open", "claimed", "decided"]
EventAction = Literal[
    "received",
    "claimed",
    "released",
    "claim_expired",
    "decided",
    "reopened",
    "verdict_changed",
]

LABELS: tuple[str, ...] = get_args(LabelKind)
DECISIONS: tuple[str, ...] = get_args(AlertDecision)
STATUSES: tuple[str, ...] = get_args(AlertStatus)
EVENT_ACTIONS: tuple[str, ...] = get_args(EventAction)
CONTROL_ACTIONS: tuple[str, ...] = get_args(ControlAction)

# Lengths of stored text, in characters: the column widths of api/tables.py, which the
# review rules enforce (SQLite would keep a longer value that PostgreSQL refuses) and the
# HTTP schemas check first.
ALERT_ID_MAX = 36
NAME_MAX = 128  # transaction, card, terminal and model ids, actors, and filters on them
CONTROL_ID_MAX = 64
ACTION_MAX = 32
STATE_MAX = 8  # status, decision and label columns
EVENT_KIND_MAX = 32  # a detector event's kind (``DetectorEventKind``)
TOPIC_MAX = 255  # outbox topic and key
NOTE_MAX = 2000
KEY_NAME_MAX = 64  # the name an API key's holder is given in the keys' configuration
ERROR_MAX = 2000  # the last delivery error kept with an outbox row

# Counts: one page of a listing, one batch of verdicts, the furthest offset.
PAGE_MAX = 500
BATCH_MAX = 500
OFFSET_MAX = 1_000_000_000
