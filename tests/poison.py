"""A corpus of hostile records for the detector's input topics, each of a named kind.

Every kind is a small function that makes one or a few records (a few kinds are
sequences: a subnormal amount then a normal one on the same new card, a label before its
transaction, a transaction twice). Each record says what the detector must do with it:

- ``DECISION``: a valid transaction: exactly one decision, under the ids it names;
- ``DEAD_LETTER``: exactly one dead letter, with ``reason`` when the reason is certain;
- ``EITHER``: one outcome, a decision or a dead letter (the contract leaves it open, as
  for a UTF-8 byte order mark or a leap second);
- ``DUPLICATE``: a valid transaction already decided: one dead letter (``duplicate``);
- ``QUIET``: a valid label or control message: no decision, at most one dead letter
  (a label may wait for its transaction, or be dead-lettered when it never comes).

``corpus`` makes rounds of every kind with fresh ids, the heavy kinds (records of
hundreds of kilobytes, 100,000 levels of nesting, a card at thousands of terminals) in
the first round only. The records are plain bytes: the tests produce them with any
Kafka client, or feed them to ``detector.validation`` directly.

The records and the building blocks of kinds are in ``tests/poison_records.py``; the
kinds in ``tests/poison_bytes.py`` (raw bytes and amounts), ``tests/poison_fields.py``
(a transaction's fields, identifiers, timestamps, metadata and sizes) and
``tests/poison_streams.py`` (repeats, labels and control messages).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

from tests import poison_bytes, poison_fields, poison_streams
from tests.poison_records import DEFAULT_MAX_MESSAGE_BYTES, HEAVY, KINDS, Context, PoisonRecord

__all__ = ["HEAVY", "KINDS", "corpus", "kinds_of"]

# The kinds register themselves as their modules load: in this order, which is the order
# the corpus shuffles from.
KIND_MODULES = (poison_bytes, poison_fields, poison_streams)


# --- the corpus -------------------------------------------------------------------------


def corpus(
    rounds: int = 1,
    *,
    run: str = "poison",
    now: datetime | None = None,
    seed: int = 0,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    heavy: bool = True,
    kinds: list[str] | None = None,
) -> list[PoisonRecord]:
    """``rounds`` rounds of every kind (or of ``kinds``), heavy kinds in the first only.

    Records of a kind stay in order (a sequence on one card keeps its order), and
    rounds are shuffled kind by kind with ``seed``.
    """
    ctx = Context(
        run=run,
        now=now or datetime.now(UTC),
        max_message_bytes=max_message_bytes,
        rng=random.Random(seed),
    )
    names = list(kinds) if kinds is not None else list(KINDS)
    unknown = set(names) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown poison kinds: {sorted(unknown)}")
    records: list[PoisonRecord] = []
    for round_ in range(rounds):
        batch = [n for n in names if n not in HEAVY or (heavy and round_ == 0)]
        ctx.rng.shuffle(batch)
        for name in batch:
            records.extend(KINDS[name](ctx))
    return records


def kinds_of(records: list[PoisonRecord]) -> set[str]:
    return {r.kind for r in records}


if __name__ == "__main__":  # a summary: python -m tests.poison
    sample = corpus()
    for name in sorted(kinds_of(sample)):
        mine = [r for r in sample if r.kind == name]
        print(f"{name:40} {len(mine):5} records, {sum(r.size for r in mine):9} bytes")
    print(f"{len(KINDS)} kinds, {len(sample)} records")
