"""What travels between the dataflow's steps: each item with its stamps.

From parsing on, every item travels as ``(item, received, seq, origin)``: ``received`` is
the time its Kafka record was written (the record's timestamp) or, without one, parsed,
so that the output step can measure the processing latency; ``seq`` numbers the records
in the order this worker read them, so that the model step can restore that order (see
``in_arrival_order``); ``origin`` is the record itself until the step that uses it (for
dead letters), else None. An item a step fails on becomes a rejection (``step_rejection``).
"""

from __future__ import annotations

from typing import Any, TypeVar

import structlog
from bytewax.connectors.kafka import KafkaSinkMessage

from detector.contracts import Control, DeadLetter, Label, ModelStatus, RejectReason, Transaction
from detector.items import ModelIn, ModelOut, Origin, Rejected
from detector.status import ShardSummary

log = structlog.get_logger(__name__)


Event = Transaction | Label
Message = KafkaSinkMessage[bytes | None, bytes | None]
T = TypeVar("T")
X = TypeVar("X")
# An item with the time (epoch seconds) its Kafka record was written, or parsed, its
# record's place in this worker's input, and the record itself while a step may still
# need it for a dead letter.
Stamped = tuple[T, float, int, Origin | None]
Parsed = Stamped[Event | Control | DeadLetter]
# What the model step hands on: outcomes, and its shards' summaries
ModelItem = Stamped[ModelOut | ShardSummary]
# A model step input routed to its shard: (shard, item)
ShardIn = tuple[int, Stamped[ModelIn]]
# What the model step and the status merge hand on to the outputs
Outcome = Stamped[ModelOut | ModelStatus]


def step_error(step: str, error: BaseException) -> str:
    """The dead letter's error for an exception a step raised on one item."""
    log.exception("step failed on one item", step=step, error_type=type(error).__name__)
    return f"{step}: {type(error).__name__}: {error}"


def step_rejection(
    step: str, error: BaseException, item: object, origin: Origin | None
) -> Rejected:
    """An item a step failed on, as a rejection that keeps what is known of its record."""
    return Rejected(
        RejectReason.INTERNAL_ERROR,
        step_error(step, error),
        payload_of(item),
        control=isinstance(item, Control),
        origin=origin if origin is not None else getattr(item, "origin", None),
    )


def payload_of(item: object) -> bytes:
    """The event inside a flow item, serialised (for a dead letter without a record)."""
    for name in ("transaction", "label"):
        inner = getattr(item, name, None)
        if isinstance(inner, Transaction | Label):
            return inner.model_dump_json().encode()
    if isinstance(item, Transaction | Label | Control):
        return item.model_dump_json().encode()
    return repr(item).encode()[:2000]


def in_arrival_order(values: list[Stamped[X]]) -> list[Stamped[X]]:
    """A batch of a keyed step in the order its records were read.

    A keyed step hands on its batch grouped by key: the card step by card, the terminal
    step by terminal. Two transactions of one card at two terminals, or a label and
    another card's transaction, would reach the next step out of the order they were
    read in, and terminal counts and the models, which learn from every transaction
    they score, depend on that order. Sorting by the input sequence (stable: what one
    record produced keeps its order) restores what one worker read, in that order: the
    order in which ``ScoringCore`` processes it.
    """
    return sorted(values, key=_seq)


def _seq(value: Stamped[Any]) -> int:
    return value[2]
