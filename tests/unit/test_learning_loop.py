"""An analyst's verdict changes the very next score: the scoring core learns at once."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from detector.contracts import Label, Transaction
from detector.core import ScoringCore
from detector.items import Scored
from detector.replay.simulator import SimulationConfig, simulate
from detector.settings import ScoringSettings


def twin_card_history(last: datetime) -> list[Transaction]:
    """Two cards with the same spending, each at terminals of its own."""
    return [
        Transaction(
            transaction_id=f"twin-{twin}-{i}",
            timestamp=last - timedelta(days=10) + timedelta(hours=12 * i),
            card_id=f"card-twin-{twin}",
            terminal_id=f"term-twin-{twin}-{i % 3}",
            amount=40.0 + i,
        )
        for i in range(20)
        for twin in "ab"
    ]


def scored(core: ScoringCore, tx: Transaction) -> Scored:
    return next(out for out in core.process(tx) if isinstance(out, Scored))


def trained_core() -> tuple[ScoringCore, datetime]:
    """A core that has seen two weeks of traffic with chargebacks of the frauds."""
    core = ScoringCore(ScoringSettings(presume_legit_days=1.0))
    records = simulate(SimulationConfig(n_customers=300, n_terminals=600, seed=7))
    last = datetime(2018, 4, 1, tzinfo=UTC)
    for record in itertools.islice(records, 8000):
        tx = record.transaction
        core.process(tx)
        last = tx.timestamp
        if record.is_fraud:
            core.process(label(tx, "chargeback"))
    for tx in twin_card_history(last):
        core.process(tx)
    return core, last


def label(tx: Transaction, source: str) -> Label:
    return Label(
        transaction_id=tx.transaction_id,
        card_id=tx.card_id,
        label="fraud",
        source=source,
        labeled_at=datetime.now(UTC),
    )


@pytest.mark.slow
@pytest.mark.parametrize("verdict", [True, False], ids=["with verdict", "without verdict"])
def test_a_fraud_verdict_raises_the_next_score_at_that_terminal(verdict: bool) -> None:
    core, last = trained_core()
    # Three times the card's usual amount at a terminal it never used: suspicious, but
    # not enough for the trained model (a larger amount scores near 1 already, leaving
    # no room to see the verdict), then found to be fraud.
    first = Transaction(
        transaction_id="first",
        timestamp=last + timedelta(minutes=1),
        card_id="card-twin-a",
        terminal_id="term-shared",
        amount=150.0,
    )
    before = scored(core, first)
    assert before.score < 0.5, before
    if verdict:
        core.process(label(first, "analyst"))
    # The twin card does the same a second later at the same terminal.
    twin = first.model_copy(
        update={
            "transaction_id": "second",
            "card_id": "card-twin-b",
            "timestamp": first.timestamp + timedelta(seconds=1),
        }
    )
    after = scored(core, twin)
    if verdict:
        assert after.score > before.score + 0.5 * (1 - before.score), (before.score, after.score)
    else:
        assert after.score <= before.score + 0.1 * (1 - before.score), (before.score, after.score)
