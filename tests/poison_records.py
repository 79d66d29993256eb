"""The poison corpus's records, what each must come to, and the building blocks of its
kinds: the fields of a valid transaction, label or control message, and records made
of them.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from detector.contracts import RejectReason

TRANSACTIONS = "transactions"
LABELS = "labels"
CONTROL = "control"
TOPICS = (TRANSACTIONS, LABELS, CONTROL)

# The broker's default largest record (message.max.bytes) is 1,048,588 bytes; the
# producer's (librdkafka) default is 1,000,000 bytes.
BROKER_MAX_BYTES = 1_048_588
DEFAULT_MAX_MESSAGE_BYTES = 65_536
NESTING_SHALLOW = 2_000
NESTING_DEEP = 100_000


class Expect(StrEnum):
    """What the detector must do with a record."""

    DECISION = "decision"
    DEAD_LETTER = "dead_letter"
    EITHER = "either"
    DUPLICATE = "duplicate"
    QUIET = "quiet"


@dataclass(frozen=True, slots=True)
class PoisonRecord:
    """One record to produce, and what must come of it."""

    kind: str
    topic: str  # TRANSACTIONS, LABELS or CONTROL (logical names; map to real topics)
    value: bytes | None
    expect: Expect
    key: bytes | None = None
    reason: RejectReason | None = None  # the dead letter's reason, when it is certain
    # The ids a decision (or a dead letter of the core, which has no offset to go by)
    # carries: (card_id, transaction_id) for transactions and labels, control_id alone.
    card_id: str | None = None
    transaction_id: str | None = None
    control_id: str | None = None

    @property
    def identity(self) -> tuple[str, ...] | None:
        """Who the record is about, as decisions and dead letters of the core tell it."""
        if self.control_id is not None:
            return (CONTROL, self.control_id)
        if self.card_id is not None and self.transaction_id is not None:
            return (self.topic, self.card_id, self.transaction_id)
        return None

    @property
    def size(self) -> int:
        return len(self.value or b"") + len(self.key or b"")


@dataclass
class Context:
    """Fresh ids and a clock for one corpus."""

    run: str
    now: datetime
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    fanout: int = 5  # transactions of the many-terminals and same-timestamp kinds
    _ids: Iterator[int] = field(default_factory=itertools.count)

    def uid(self, what: str) -> str:
        return f"{self.run}-{what}-{next(self._ids)}"

    def recent(self, seconds_ago: float = 3600.0) -> datetime:
        """A timestamp safely in the past (the detector rejects the future)."""
        return self.now - timedelta(seconds=seconds_ago + self.rng.uniform(0, 60))


Kind = Callable[[Context], list[PoisonRecord]]
# Filled as tests.poison imports the kinds' modules: poison_bytes, poison_fields and
# poison_streams, in that order (the order the corpus shuffles from).
KINDS: dict[str, Kind] = {}
HEAVY: set[str] = set()  # kinds made once per corpus (large records, many records)


def kind(name: str, *, heavy: bool = False) -> Callable[[Kind], Kind]:
    def register(make: Kind) -> Kind:
        if name in KINDS:
            raise ValueError(f"poison kind {name!r} defined twice")
        KINDS[name] = make
        if heavy:
            HEAVY.add(name)
        return make

    return register


# --- building blocks -------------------------------------------------------------------


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def dump(value: Any) -> bytes:
    """JSON as a careless producer writes it: NaN and Infinity allowed, UTF-8, no ASCII."""
    return json.dumps(value, ensure_ascii=False, allow_nan=True).encode()


def tx_fields(ctx: Context, **overrides: Any) -> dict[str, Any]:
    """A valid transaction's fields on a new card; ``...`` as a value drops the field."""
    base: dict[str, Any] = {
        "transaction_id": ctx.uid("tx"),
        "timestamp": iso(ctx.recent()),
        "card_id": ctx.uid("card"),
        "terminal_id": ctx.uid("term"),
        "amount": 42.5,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def label_fields(
    ctx: Context, card_id: str, transaction_id: str, /, **overrides: Any
) -> dict[str, Any]:
    base: dict[str, Any] = {
        "transaction_id": transaction_id,
        "card_id": card_id,
        "label": "fraud",
        "source": "analyst",
        "labeled_at": iso(ctx.recent(60)),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def control_fields(ctx: Context, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "control_id": ctx.uid("control"),
        "action": "set_thresholds",
        "thresholds": {"mode": "volume", "review_share": 0.01, "block_share": 0.001},
        "requested_by": "poison",
        "requested_at": iso(ctx.now),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def valid_tx(name: str, fields: dict[str, Any], value: bytes | None = None) -> PoisonRecord:
    """A transaction the detector must decide (ids as the contract strips them)."""
    card = str(fields["card_id"]).strip()
    return PoisonRecord(
        name,
        TRANSACTIONS,
        dump(fields) if value is None else value,
        Expect.DECISION,
        key=card.encode(),
        card_id=card,
        transaction_id=str(fields["transaction_id"]).strip(),
    )


def either_tx(name: str, fields: dict[str, Any], value: bytes) -> PoisonRecord:
    card = str(fields["card_id"]).strip()
    return PoisonRecord(
        name,
        TRANSACTIONS,
        value,
        Expect.EITHER,
        key=card.encode(),
        card_id=card,
        transaction_id=str(fields["transaction_id"]).strip(),
    )


def dead(
    name: str,
    value: bytes | None,
    reason: RejectReason | None = None,
    *,
    topic: str = TRANSACTIONS,
    key: bytes | None = None,
) -> PoisonRecord:
    return PoisonRecord(name, topic, value, Expect.DEAD_LETTER, key=key, reason=reason)


def replace_value(raw: bytes, name: str, literal: bytes) -> bytes:
    """``raw`` (a JSON object) with field ``name``'s value written as ``literal``."""
    obj = json.loads(raw)
    marker = "__poison_marker__"
    obj[name] = marker
    return dump(obj).replace(f'"{marker}"'.encode(), literal)


def padded(fields: dict[str, Any], size: int) -> bytes:
    """The JSON of ``fields`` padded with insignificant whitespace to exactly ``size``."""
    raw = dump(fields)
    if len(raw) > size:
        raise ValueError(f"record of {len(raw)} bytes cannot be padded to {size}")
    return raw[:-1] + b" " * (size - len(raw)) + b"}"
