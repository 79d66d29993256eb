"""A seeded card-transaction generator after the Fraud Detection Handbook's simulator.

It follows the simulation published with *Reproducible Machine Learning for Credit Card
Fraud Detection: Practical Handbook* (Le Borgne et al., ULB, 2022): customers and
terminals on a square grid, each customer paying at the terminals near them, and three
fraud scenarios (large amounts, compromised terminals, compromised cards). It is written
for fraudstream and streams day by day, so it can run for ever as a live source.

Differences from the Handbook's batch code, all forced by generating a day at a time:

- a compromised card's transactions are fraud with probability ``card_fraud_share``
  each, instead of exactly a third of the 14-day window picked after the fact;
- a card or terminal compromised again while still compromised has its window extended,
  instead of being drawn twice (which in the Handbook can multiply an amount by 25);
- amounts that round to 0.00 are skipped (the contract requires amount > 0).

An attack can be planted, to see the detector notice it: a burst of small amounts from
many cards at one terminal in minutes (``attack_at``, scenario ``PLANTED_ATTACK``, fraud),
and amounts multiplied by ``shift_factor`` from ``shift_at`` on, for ``shift_hours`` or for
good (a drift, not fraud).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import count

from detector.contracts import Transaction
from detector.replay.datasets import Record

SECONDS_PER_DAY = 86_400

# Scenario codes, as in the Handbook's TX_FRAUD_SCENARIO column.
GENUINE = 0
LARGE_AMOUNT = 1
COMPROMISED_TERMINAL = 2
COMPROMISED_CARD = 3
# Not in the Handbook: the planted burst of small amounts at one terminal.
PLANTED_ATTACK = 4


@dataclass(frozen=True)
class SimulationConfig:
    """Parameters of the simulation; the defaults are the Handbook's."""

    n_customers: int = 5000
    n_terminals: int = 10_000
    radius: float = 5.0
    seed: int = 0
    start: datetime = field(default_factory=lambda: datetime(2018, 4, 1, tzinfo=UTC))
    days: int | None = None
    """Number of days to generate; None generates for ever."""
    grid_size: float = 100.0
    min_mean_amount: float = 5.0
    max_mean_amount: float = 100.0
    max_mean_tx_per_day: float = 4.0
    time_of_day_mean: float = SECONDS_PER_DAY / 2
    time_of_day_std: float = 20_000.0
    large_amount_threshold: float = 220.0
    compromised_terminals_per_day: int = 2
    terminal_compromise_days: int = 28
    compromised_cards_per_day: int = 3
    card_compromise_days: int = 14
    card_fraud_share: float = 1 / 3
    card_amount_multiplier: float = 5.0
    attack_at: datetime | None = None
    """When the planted burst starts (None: no burst)."""
    attack_terminal: int = 0
    attack_cards: int = 60
    attack_minutes: float = 5.0
    attack_max_amount: float = 3.0
    shift_at: datetime | None = None
    """From when amounts are multiplied by ``shift_factor`` (None: never)."""
    shift_factor: float = 3.0
    shift_hours: float | None = None
    """How long the amounts stay multiplied (None: for good)."""

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            raise ValueError("SimulationConfig.start must be timezone-aware")
        if self.n_customers < 1 or self.n_terminals < 1:
            raise ValueError("n_customers and n_terminals must be at least 1")
        if self.days is not None and self.days < 0:
            raise ValueError("days must be >= 0 or None")
        if not 0 <= self.compromised_terminals_per_day <= self.n_terminals:
            raise ValueError("compromised_terminals_per_day must be in [0, n_terminals]")
        if not 0 <= self.compromised_cards_per_day <= self.n_customers:
            raise ValueError("compromised_cards_per_day must be in [0, n_customers]")
        if not 0 <= self.card_fraud_share <= 1:
            raise ValueError("card_fraud_share must be in [0, 1]")
        if self.radius <= 0 or self.grid_size <= 0:
            raise ValueError("radius and grid_size must be positive")
        for name in ("attack_at", "shift_at"):
            at = getattr(self, name)
            if at is not None and (at.tzinfo is None or at.utcoffset() is None):
                raise ValueError(f"SimulationConfig.{name} must be timezone-aware")
        if self.attack_at is not None and not 0 <= self.attack_terminal < self.n_terminals:
            raise ValueError("attack_terminal must be in [0, n_terminals)")
        if self.attack_at is not None and not 1 <= self.attack_cards <= self.n_customers:
            raise ValueError("attack_cards must be in [1, n_customers]")
        if self.attack_minutes <= 0 or self.attack_max_amount < 0.01 or self.shift_factor <= 0:
            raise ValueError("attack_minutes, attack_max_amount and shift_factor must be positive")
        if self.shift_hours is not None and self.shift_hours <= 0:
            raise ValueError("shift_hours must be positive or None")


@dataclass(frozen=True, slots=True)
class _Customer:
    index: int
    mean_amount: float
    std_amount: float
    exp_minus_rate: float  # exp(-mean transactions per day), for Poisson draws
    terminals: tuple[int, ...]


@dataclass(slots=True)
class _Draft:
    """A transaction before its fraud label and id are final."""

    seconds: int
    customer: int
    terminal: int
    amount: float
    scenario: int = GENUINE


def simulate(config: SimulationConfig) -> Iterator[Record]:
    """Generate transactions lazily, day by day, in timestamp order.

    Parameters
    ----------
    config
        The simulation parameters; the same config always yields the same records.

    Yields
    ------
    Record
        A transaction with its ground truth (``is_fraud`` and ``scenario`` 0 to 3).
    """
    customers = _make_customers(config)
    day_rng = random.Random(f"{config.seed}-transactions")
    fraud = _FraudState(config)
    start = config.start.astimezone(UTC)
    ids = count()
    days = count() if config.days is None else range(config.days)
    for day in days:
        drafts = _generate_day(config, customers, day_rng)
        fraud.label_day(day, drafts)
        day_start = start + timedelta(days=day)
        _plant(config, day_start, drafts)
        drafts.sort(key=lambda d: d.seconds)
        for draft in drafts:
            yield _to_record(config.seed, next(ids), day_start, draft)


def _make_customers(config: SimulationConfig) -> list[_Customer]:
    """Draw customer and terminal profiles and each customer's reachable terminals."""
    rng = random.Random(f"{config.seed}-profiles")
    size = config.grid_size
    profiles = [
        (
            rng.uniform(0, size),
            rng.uniform(0, size),
            rng.uniform(config.min_mean_amount, config.max_mean_amount),
            rng.uniform(0, config.max_mean_tx_per_day),
        )
        for _ in range(config.n_customers)
    ]
    terminals = [(rng.uniform(0, size), rng.uniform(0, size)) for _ in range(config.n_terminals)]
    near = _terminals_within(terminals, [(x, y) for x, y, _, _ in profiles], config.radius)
    return [
        _Customer(i, mean, mean / 2, math.exp(-rate), near[i])
        for i, (_, _, mean, rate) in enumerate(profiles)
    ]


def _terminals_within(
    terminals: list[tuple[float, float]], points: list[tuple[float, float]], radius: float
) -> list[tuple[int, ...]]:
    """For each point, the terminals strictly closer than ``radius``, in index order."""
    # Bucket terminals into radius-sized cells so each point checks 9 cells, not all
    # terminals: 5,000 x 10,000 distance checks would take seconds in pure Python.
    cells: dict[tuple[int, int], list[tuple[int, float, float]]] = {}
    for index, (x, y) in enumerate(terminals):
        cells.setdefault((int(x // radius), int(y // radius)), []).append((index, x, y))
    r2 = radius * radius
    result = []
    for px, py in points:
        cx, cy = int(px // radius), int(py // radius)
        found = [
            index
            for dx in (-1, 0, 1)
            for dy in (-1, 0, 1)
            for index, x, y in cells.get((cx + dx, cy + dy), ())
            if (x - px) ** 2 + (y - py) ** 2 < r2
        ]
        result.append(tuple(sorted(found)))
    return result


def _generate_day(
    config: SimulationConfig, customers: list[_Customer], rng: random.Random
) -> list[_Draft]:
    """One day's genuine transactions, unsorted, times in seconds since midnight."""
    drafts: list[_Draft] = []
    gauss, random_, uniform, choice = rng.gauss, rng.random, rng.uniform, rng.choice
    t_mean, t_std = config.time_of_day_mean, config.time_of_day_std
    for customer in customers:
        if not customer.terminals:
            continue
        n = _poisson(random_, customer.exp_minus_rate)
        for _ in range(n):
            seconds = int(gauss(t_mean, t_std))
            if not 0 < seconds < SECONDS_PER_DAY:
                continue
            amount = gauss(customer.mean_amount, customer.std_amount)
            if amount < 0:
                amount = uniform(0, 2 * customer.mean_amount)
            amount = round(amount, 2)
            if amount <= 0:
                continue
            drafts.append(_Draft(seconds, customer.index, choice(customer.terminals), amount))
    return drafts


def _plant(config: SimulationConfig, day_start: datetime, drafts: list[_Draft]) -> None:
    """Plant the attack's burst and amount shift in one day's drafts."""
    if config.shift_at is not None:
        shift_from = (config.shift_at - day_start).total_seconds()
        shift_to = (
            math.inf if config.shift_hours is None else shift_from + config.shift_hours * 3600.0
        )
        for draft in drafts:
            if shift_from <= draft.seconds < shift_to:
                draft.amount = round(draft.amount * config.shift_factor, 2)
    if config.attack_at is None:
        return
    begin = (config.attack_at - day_start).total_seconds()
    if not 0 <= begin < SECONDS_PER_DAY:
        return
    rng = random.Random(f"{config.seed}-attack")
    cards = rng.sample(range(config.n_customers), config.attack_cards)
    step = config.attack_minutes * 60.0 / config.attack_cards
    for i, card in enumerate(cards):
        seconds = int(begin + i * step)
        if seconds >= SECONDS_PER_DAY:
            break
        amount = round(rng.uniform(0.5, config.attack_max_amount), 2)
        drafts.append(
            _Draft(seconds, card, config.attack_terminal, max(0.01, amount), PLANTED_ATTACK)
        )


def _poisson(random_: Callable[[], float], exp_minus_rate: float) -> int:
    """Knuth's Poisson sampler: fast for the small rates (< 4) used here."""
    k, p = 0, random_()
    while p > exp_minus_rate:
        k += 1
        p *= random_()
    return k


class _FraudState:
    """Which terminals and cards are compromised, and until which day."""

    def __init__(self, config: SimulationConfig) -> None:
        self._config = config
        self._rng = random.Random(f"{config.seed}-frauds")
        self._terminals_until: dict[int, int] = {}
        self._cards_until: dict[int, int] = {}

    def label_day(self, day: int, drafts: list[_Draft]) -> None:
        """Compromise today's terminals and cards, then label (and inflate) the day."""
        config, rng = self._config, self._rng
        self._compromise(
            self._terminals_until,
            config.n_terminals,
            config.compromised_terminals_per_day,
            day + config.terminal_compromise_days,
        )
        self._compromise(
            self._cards_until,
            config.n_customers,
            config.compromised_cards_per_day,
            day + config.card_compromise_days,
        )
        terminals = {t for t, until in self._terminals_until.items() if day < until}
        cards = {c for c, until in self._cards_until.items() if day < until}
        # Later scenarios override earlier ones, as in the Handbook's add_frauds.
        for draft in drafts:
            if draft.amount > config.large_amount_threshold:
                draft.scenario = LARGE_AMOUNT
            if draft.terminal in terminals:
                draft.scenario = COMPROMISED_TERMINAL
            if draft.customer in cards and rng.random() < config.card_fraud_share:
                draft.amount = round(draft.amount * config.card_amount_multiplier, 2)
                draft.scenario = COMPROMISED_CARD
        for table in (self._terminals_until, self._cards_until):
            for key in [k for k, until in table.items() if until <= day + 1]:
                del table[key]

    def _compromise(self, table: dict[int, int], population: int, n: int, until: int) -> None:
        for key in self._rng.sample(range(population), n):
            table[key] = max(table.get(key, 0), until)


def _to_record(seed: int, n: int, day_start: datetime, draft: _Draft) -> Record:
    transaction = Transaction.model_validate(
        {
            "transaction_id": f"sim-{seed}-{n}",
            "timestamp": day_start + timedelta(seconds=draft.seconds),
            "card_id": f"card-{draft.customer}",
            "terminal_id": f"term-{draft.terminal}",
            "amount": draft.amount,
        }
    )
    return Record(transaction, draft.scenario != GENUINE, draft.scenario)
