"""Evaluation metrics of the Fraud Detection Handbook (Le Borgne et al., chapters 3 to 5).

Pure Python and numpy, no I/O: the Handbook's weekly test protocol (known compromised
cards removed, card precision@k with cards caught earlier in the week removed, its upper
bound) and a plain-text table. Its AUC ROC and average precision come from
:mod:`models.ranking`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np

from models.ranking import average_precision, roc_auc

__all__ = [
    "DayReport",
    "ScoredTransaction",
    "WeekReport",
    "evaluate_week",
    "format_table",
]


@dataclass(frozen=True)
class ScoredTransaction:
    """One scored transaction with its true label; ``alerted`` = decision review or block."""

    transaction_id: str
    card_id: str
    day: date
    score: float
    is_fraud: bool
    alerted: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the day as ISO text)."""
        return {
            "transaction_id": self.transaction_id,
            "card_id": self.card_id,
            "day": self.day.isoformat(),
            "score": self.score,
            "is_fraud": self.is_fraud,
            "alerted": self.alerted,
        }


@dataclass(frozen=True)
class DayReport:
    """One test day of a week.

    ``transactions`` and ``frauds`` count the day's rows left after removing known
    compromised cards; ``compromised_cards`` counts the compromised cards among the day's
    candidates (cards caught earlier in the week removed).
    """

    day: date
    transactions: int
    frauds: int
    compromised_cards: int
    card_precision_at_k: float
    upper_bound: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the day as ISO text)."""
        return {
            "day": self.day.isoformat(),
            "transactions": self.transactions,
            "frauds": self.frauds,
            "compromised_cards": self.compromised_cards,
            "card_precision_at_k": self.card_precision_at_k,
            "upper_bound": self.upper_bound,
        }


@dataclass(frozen=True)
class WeekReport:
    """The Handbook's metrics for one test week (see :func:`evaluate_week`)."""

    week_start: date
    days: int
    transactions: int
    frauds: int
    auc_roc: float | None
    average_precision: float | None
    card_precision_at_k: float
    card_precision_upper_bound: float
    alert_rate: float
    k: int
    per_day: list[DayReport] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (dates as ISO text, per-day reports as dicts)."""
        return {
            "week_start": self.week_start.isoformat(),
            "days": self.days,
            "transactions": self.transactions,
            "frauds": self.frauds,
            "auc_roc": self.auc_roc,
            "average_precision": self.average_precision,
            "card_precision_at_k": self.card_precision_at_k,
            "card_precision_upper_bound": self.card_precision_upper_bound,
            "alert_rate": self.alert_rate,
            "k": self.k,
            "per_day": [d.to_dict() for d in self.per_day],
        }


def evaluate_week(
    rows: Iterable[ScoredTransaction],
    week_start: date,
    *,
    k: int = 100,
    days: int = 7,
    known_window_days: int = 14,
    delay_days: int = 7,
) -> WeekReport:
    """Evaluate one test week with the Handbook's protocol.

    The test days are the calendar dates ``week_start`` .. ``week_start + days - 1`` (the
    rows' ``day``). Pass every scored row, including those before the week: they are
    needed to know which cards were already known to be compromised; the function filters.

    1. Known cards. On test day ``d`` a card is *known* if it has a truly fraudulent row
       (true labels of all rows, scored or not in the week) on a day between
       ``T - known_window_days`` and ``d - (delay_days + 1)`` inclusive, ``T`` being
       ``week_start`` (defaults: T-14 .. d-8; a fraud on d-7 does not count). Its rows of
       day ``d`` are removed. The remaining rows of all test days form the week's test set.
    2. ``transactions``, ``frauds``, AUC ROC, average precision and the alert rate (share
       of alerted rows) are computed over that test set. AUC and AP are ``None`` when the
       test set has a single class (or is empty) rather than raising.
    3. Card precision@k, after the Handbook's ``card_precision_top_k``: each test day, in
       order, the candidate cards are the cards of the day's remaining rows minus the
       cards *caught* earlier in the week. A card's daily score is the max of its scores
       that day; it is *compromised* that day if one of its remaining rows that day is a
       fraud. The k candidates with the highest daily score are the day's top k (ties
       broken by ``card_id`` ascending, for determinism). Day precision = compromised
       cards in the top k divided by ``k`` (not by the number of cards); those cards are
       then added to the caught set. Day upper bound = ``min(k, compromised candidates)
       / k``.
    4. The week's card precision@k and upper bound are the means over the test days that
       have at least one remaining row (the Handbook iterates over the days present in
       its test set); 0.0 when there is none. ``per_day`` lists those days only.

    Raises
    ------
    ValueError
        If ``k`` or ``days`` is not positive, or ``known_window_days`` or ``delay_days``
        is negative.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if days <= 0:
        raise ValueError(f"days must be positive, got {days}")
    if known_window_days < 0 or delay_days < 0:
        raise ValueError("known_window_days and delay_days must not be negative")

    week_end = week_start + timedelta(days=days - 1)
    known_from = week_start - timedelta(days=known_window_days)
    known_lag = timedelta(days=delay_days + 1)
    known_until = week_end - known_lag  # the latest fraud day that can make a card known

    first_fraud: dict[str, date] = {}  # earliest fraud day in [known_from, known_until]
    week_rows: dict[date, list[ScoredTransaction]] = {}
    for row in rows:
        if row.is_fraud and known_from <= row.day <= known_until:
            seen = first_fraud.get(row.card_id)
            if seen is None or row.day < seen:
                first_fraud[row.card_id] = row.day
        if week_start <= row.day <= week_end:
            week_rows.setdefault(row.day, []).append(row)

    labels: list[bool] = []
    scores: list[float] = []
    alerts = 0
    caught: set[str] = set()
    per_day: list[DayReport] = []
    for offset in range(days):
        day = week_start + timedelta(days=offset)
        limit = day - known_lag
        kept = [
            r
            for r in week_rows.get(day, [])
            if (f := first_fraud.get(r.card_id)) is None or f > limit
        ]
        if not kept:
            continue
        card_score: dict[str, float] = {}
        card_fraud: dict[str, bool] = {}
        for r in kept:
            labels.append(r.is_fraud)
            scores.append(r.score)
            alerts += r.alerted
            if r.card_id in caught:
                continue
            best = card_score.get(r.card_id)
            if best is None or r.score > best:
                card_score[r.card_id] = r.score
            card_fraud[r.card_id] = card_fraud.get(r.card_id, False) or r.is_fraud
        ranked = sorted(card_score, key=lambda c: (-card_score[c], c))
        detected = [c for c in ranked[:k] if card_fraud[c]]
        compromised = sum(card_fraud.values())
        caught.update(detected)
        per_day.append(
            DayReport(
                day=day,
                transactions=len(kept),
                frauds=sum(r.is_fraud for r in kept),
                compromised_cards=compromised,
                card_precision_at_k=len(detected) / k,
                upper_bound=min(k, compromised) / k,
            )
        )

    n = len(labels)
    frauds = sum(labels)
    auc: float | None = None
    ap: float | None = None
    if 0 < frauds < n:
        auc = roc_auc(labels, scores)
        ap = average_precision(labels, scores)
    return WeekReport(
        week_start=week_start,
        days=days,
        transactions=n,
        frauds=frauds,
        auc_roc=auc,
        average_precision=ap,
        card_precision_at_k=float(np.mean([d.card_precision_at_k for d in per_day]))
        if per_day
        else 0.0,
        card_precision_upper_bound=float(np.mean([d.upper_bound for d in per_day]))
        if per_day
        else 0.0,
        alert_rate=alerts / n if n else 0.0,
        k=k,
        per_day=per_day,
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def format_table(reports: Sequence[WeekReport]) -> str:
    """Fixed-width plain-text table of weekly reports, with a final ``mean`` row.

    The mean row averages every column over the weeks (counts rounded to integers; AUC and
    AP over the weeks where they are defined).
    """
    k = reports[0].k if reports else 100
    header = (
        f"{'week start':<10}  {'transactions':>12}  {'frauds':>7}  {'AUC ROC':>7}  "
        f"{'AP':>6}  {f'CP@{k}':>7}  {'upper':>6}  {'alerts':>6}"
    )
    lines = [header, "-" * len(header)]

    def line(
        label: str,
        tx: float,
        frauds: float,
        auc: float | None,
        ap: float | None,
        cp: float | None,
        ub: float | None,
        ar: float | None,
    ) -> str:
        return (
            f"{label:<10}  {tx:>12.0f}  {frauds:>7.0f}  {_fmt(auc):>7}  {_fmt(ap):>6}  "
            f"{_fmt(cp):>7}  {_fmt(ub):>6}  {_fmt(ar):>6}"
        )

    for r in reports:
        lines.append(
            line(
                r.week_start.isoformat(),
                r.transactions,
                r.frauds,
                r.auc_roc,
                r.average_precision,
                r.card_precision_at_k,
                r.card_precision_upper_bound,
                r.alert_rate,
            )
        )
    lines.append("-" * len(header))
    lines.append(
        line(
            "mean",
            _mean([r.transactions for r in reports]) or 0.0,
            _mean([r.frauds for r in reports]) or 0.0,
            _mean([r.auc_roc for r in reports]),
            _mean([r.average_precision for r in reports]),
            _mean([r.card_precision_at_k for r in reports]),
            _mean([r.card_precision_upper_bound for r in reports]),
            _mean([r.alert_rate for r in reports]),
        )
    )
    return "\n".join(lines)
