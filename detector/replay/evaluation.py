"""Offline evaluation: replay a dataset in event time through the production scoring core.

Every transaction is scored by ``ScoringCore`` (the same card, terminal and model steps
as the dataflow) before anything about its own label is known. Labels then arrive as
they would in production:

- **analyst review**: at the end of each day, the ``review_capacity`` cards with the
  highest score that day (cards already confirmed fraudulent excluded) are investigated,
  and all that day's transactions of those cards get their true labels at once;
- **chargebacks**: every other transaction's true label arrives ``label_delay_days``
  after the transaction.

The metrics follow the Fraud Detection Handbook's protocol (see ``detector.replay.handbook``).
"""

from __future__ import annotations

import csv
import heapq
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import IO, Any

from detector.contracts import Control, Label
from detector.core import ScoringCore
from detector.items import Learned, Rejected, Scored
from detector.replay.datasets import Record
from detector.replay.handbook import ScoredTransaction, WeekReport, evaluate_week
from detector.replay.progress import ProgressBar
from detector.scoring import ModelState
from detector.settings import ScoringSettings

DAY = timedelta(days=1)
DEFAULT_TEST_WEEKS = (date(2018, 7, 4), date(2018, 7, 11), date(2018, 7, 18), date(2018, 7, 25))


@dataclass(frozen=True)
class LabelPolicy:
    """How true labels reach the model during a replay."""

    review_capacity: int = 100
    label_delay_days: float = 7.0
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.review_capacity < 0:
            raise ValueError(f"review_capacity must be >= 0, got {self.review_capacity}")
        if self.label_delay_days < 0:
            raise ValueError(f"label_delay_days must be >= 0, got {self.label_delay_days}")


@dataclass
class Throughput:
    """Where the replay's time went."""

    transactions: int = 0
    labels: int = 0
    scoring_seconds: float = 0.0
    learning_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def scoring_per_second(self) -> float:
        return self.transactions / self.scoring_seconds if self.scoring_seconds else 0.0

    @property
    def replay_per_second(self) -> float:
        return self.transactions / self.wall_seconds if self.wall_seconds else 0.0

    def to_dict(self) -> dict[str, float]:
        return {
            "transactions": self.transactions,
            "labels_learned": self.labels,
            "scoring_seconds": round(self.scoring_seconds, 3),
            "learning_seconds": round(self.learning_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "scoring_transactions_per_second": round(self.scoring_per_second, 1),
            "replay_transactions_per_second": round(self.replay_per_second, 1),
        }


@dataclass(frozen=True)
class ReliabilityBin:
    """Published scores in ``[low, high)``: how many, their mean, and the fraud rate."""

    low: float
    high: float
    transactions: int
    mean_score: float
    fraud_rate: float


@dataclass(frozen=True)
class Calibration:
    """Whether published scores are fraud probabilities, over the test weeks.

    ``expected_calibration_error``: over 10 equal bins of the score, the gap between mean
    score and fraud rate, weighed by the bin's share of transactions.
    """

    transactions: int
    fraud_rate: float
    mean_score: float
    expected_calibration_error: float
    share_above_half: float
    mean_score_above_half: float | None
    fraud_rate_above_half: float | None
    bins: tuple[ReliabilityBin, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "transactions": self.transactions,
            "fraud_rate": self.fraud_rate,
            "mean_score": self.mean_score,
            "expected_calibration_error": self.expected_calibration_error,
            "share_above_half": self.share_above_half,
            "mean_score_above_half": self.mean_score_above_half,
            "fraud_rate_above_half": self.fraud_rate_above_half,
            "reliability": [vars(b) for b in self.bins],
        }

    def format(self) -> str:
        """The calibration line and the reliability table, as ``evaluate`` prints them."""
        above = self.fraud_rate_above_half
        lines = [
            f"calibration: ECE {self.expected_calibration_error:.4f} over "
            f"{self.transactions:,} test-week transactions (mean score {self.mean_score:.4f}, "
            f"fraud rate {self.fraud_rate:.4f}); {self.share_above_half:.2%} score 0.5 or "
            f"more, {'-' if above is None else f'{above:.1%}'} of them fraud"
            + (
                f" (mean score {self.mean_score_above_half:.3f})"
                if self.mean_score_above_half is not None
                else ""
            ),
            f"{'score':<11}  {'transactions':>12}  {'mean score':>10}  {'fraud rate':>10}",
        ]
        for b in self.bins:
            if b.transactions:
                lines.append(
                    f"{b.low:.1f} to {b.high:.1f}  {b.transactions:>12}  "
                    f"{b.mean_score:>10.3f}  {b.fraud_rate:>10.3f}"
                )
        return "\n".join(lines)


def calibration_of(rows: Sequence[ScoredTransaction], bins: int = 10) -> Calibration | None:
    """How well the scores of ``rows`` match their fraud rate (None without rows)."""
    if not rows:
        return None
    counts = [0] * bins
    sums = [0.0] * bins
    frauds = [0] * bins
    for row in rows:
        i = min(bins - 1, max(0, int(row.score * bins)))
        counts[i] += 1
        sums[i] += row.score
        frauds[i] += row.is_fraud
    n = len(rows)
    above = [row for row in rows if row.score >= 0.5]
    return Calibration(
        transactions=n,
        fraud_rate=sum(frauds) / n,
        mean_score=sum(sums) / n,
        expected_calibration_error=sum(abs(s - f) for s, f in zip(sums, frauds, strict=True)) / n,
        share_above_half=len(above) / n,
        mean_score_above_half=sum(r.score for r in above) / len(above) if above else None,
        fraud_rate_above_half=sum(r.is_fraud for r in above) / len(above) if above else None,
        bins=tuple(
            ReliabilityBin(
                low=i / bins,
                high=(i + 1) / bins,
                transactions=counts[i],
                mean_score=sums[i] / counts[i] if counts[i] else 0.0,
                fraud_rate=frauds[i] / counts[i] if counts[i] else 0.0,
            )
            for i in range(bins)
        ),
    )


@dataclass
class EvaluationResult:
    """Everything a replay produced: per-week metrics, throughput, and the scored rows."""

    weeks: list[WeekReport]
    throughput: Throughput
    labels_by_source: dict[str, int]
    decisions: dict[str, int]
    rows: list[ScoredTransaction] = field(repr=False)
    # labels learned per (day the label arrived, source)
    labels_by_day: Counter[tuple[date, str]] = field(default_factory=Counter, repr=False)
    skipped_records: int = 0
    model: ModelState | None = field(default=None, repr=False)
    # the published scores against the truth, over the test weeks
    calibration: Calibration | None = None

    def mean(self) -> dict[str, float | None]:
        def avg(values: list[float | None]) -> float | None:
            present = [v for v in values if v is not None]
            return sum(present) / len(present) if present else None

        return {
            "auc_roc": avg([w.auc_roc for w in self.weeks]),
            "average_precision": avg([w.average_precision for w in self.weeks]),
            "card_precision_at_k": avg([w.card_precision_at_k for w in self.weeks]),
            "card_precision_upper_bound": avg([w.card_precision_upper_bound for w in self.weeks]),
            "alert_rate": avg([w.alert_rate for w in self.weeks]),
        }

    def report(self, **context: Any) -> dict[str, Any]:
        return {
            **context,
            "weeks": [w.to_dict() for w in self.weeks],
            "mean": self.mean(),
            "throughput": self.throughput.to_dict(),
            "labels_by_source": self.labels_by_source,
            "decisions": self.decisions,
            "skipped_records": self.skipped_records,
            "calibration": self.calibration.to_dict() if self.calibration else None,
        }


class _LabelFeed:
    """Delivers reviews at day ends and chargebacks after the delay, in event time."""

    def __init__(self, policy: LabelPolicy) -> None:
        self.policy = policy
        self.delay = timedelta(days=policy.label_delay_days)
        self.day: date | None = None  # a UTC calendar day
        # today's transactions by card: (transaction id, time, is fraud)
        self.today: dict[str, list[tuple[str, datetime, bool]]] = defaultdict(list)
        self.today_max: dict[str, float] = {}
        self.confirmed_fraud_cards: set[str] = set()
        self.reviewed: set[str] = set()  # their chargeback is not sent
        self.charged_back: set[str] = set()  # today's, already labelled by a short delay
        self._chargebacks: list[tuple[datetime, str, str, bool]] = []

    def observe(self, tx_id: str, card_id: str, when: datetime, score: float, truth: bool) -> None:
        self.today[card_id].append((tx_id, when, truth))
        if score > self.today_max.get(card_id, -1.0):
            self.today_max[card_id] = score
        heapq.heappush(self._chargebacks, (when + self.delay, tx_id, card_id, truth))

    def due(self, now: datetime) -> Iterator[Label]:
        """Labels known by ``now``: the reviews of past days, then due chargebacks."""
        today = utc_day(now)
        if self.day is not None and today > self.day:
            yield from self._review(self.day)
        self.day = today
        while self._chargebacks and self._chargebacks[0][0] <= now:
            due_at, tx_id, card_id, truth = heapq.heappop(self._chargebacks)
            if tx_id in self.reviewed:
                self.reviewed.discard(tx_id)  # reviewed already; forget it
                continue
            if truth:
                self.confirmed_fraud_cards.add(card_id)
            if utc_day(due_at - self.delay) == today:
                self.charged_back.add(tx_id)  # a delay under a day: not to be reviewed too
            yield _label(tx_id, card_id, truth, "chargeback", due_at)

    def _review(self, day: date) -> Iterator[Label]:
        candidates = [c for c in self.today_max if c not in self.confirmed_fraud_cards]
        candidates.sort(key=lambda c: self.today_max[c], reverse=True)
        end_of_day = datetime.combine(day, dtime.max, tzinfo=UTC)
        for card_id in candidates[: self.policy.review_capacity]:
            for tx_id, _, truth in self.today[card_id]:
                if tx_id in self.charged_back:
                    continue
                self.reviewed.add(tx_id)
                if truth:
                    self.confirmed_fraud_cards.add(card_id)
                yield _label(tx_id, card_id, truth, "analyst", end_of_day)
        self.today.clear()
        self.today_max.clear()
        self.charged_back.clear()


def utc_day(when: datetime) -> date:
    """The UTC calendar day of ``when``: days are cut the same way whatever the offset."""
    return when.astimezone(UTC).date()


def _label(tx_id: str, card_id: str, truth: bool, source: str, at: datetime) -> Label:
    return Label.model_construct(
        transaction_id=tx_id,
        card_id=card_id,
        label="fraud" if truth else "legit",
        source=source,
        labeled_at=at,
        origin="chargeback" if source == "chargeback" else "alerted",
    )


def evaluate(
    records: Iterable[Record],
    *,
    config: ScoringSettings | None = None,
    policy: LabelPolicy | None = None,
    test_weeks: Sequence[date] = DEFAULT_TEST_WEEKS,
    k: int = 100,
    scores_out: IO[str] | None = None,
    progress: bool = False,
    total: int | None = None,
    stop_after_last_week: bool = True,
    controls: Sequence[Control] = (),
    observe: Callable[[Scored, bool], None] | None = None,
) -> EvaluationResult:
    """Replay ``records`` (in timestamp order, with ground truth) and measure the core.

    ``controls`` are applied before the first transaction (rules to backtest, say);
    ``observe`` sees every scored transaction with its ground truth.
    """
    policy = policy or LabelPolicy()
    # Labels are explicit here: no transaction is presumed legitimate for lack of one.
    config = config or ScoringSettings().evaluation()
    core = ScoringCore(config)
    for control in controls:
        applied = core.apply(control)
        if isinstance(applied, Rejected):
            raise ValueError(applied.error)
    feed = _LabelFeed(policy)
    keep_from = min(test_weeks) - timedelta(days=14) if test_weeks else None
    end = max(test_weeks) + timedelta(days=7) if test_weeks and stop_after_last_week else None
    writer = csv.writer(scores_out) if scores_out is not None else None
    if writer is not None:
        writer.writerow(["transaction_id", "score", "decision"])
    rows: list[ScoredTransaction] = []
    labels_by_day: Counter[tuple[date, str]] = Counter()
    stats = Throughput()
    started = time.perf_counter()
    with ProgressBar("scoring", enabled=progress, total=total) as advance:
        for record in records:
            tx = record.transaction
            day = utc_day(tx.timestamp)
            if end is not None and day >= end:
                break
            if record.is_fraud is None:
                raise ValueError(f"transaction {tx.transaction_id} has no ground truth")
            if policy.enabled:
                t0 = time.perf_counter()
                for label in feed.due(tx.timestamp):
                    for out in core.process(label):
                        if isinstance(out, Learned):
                            stats.labels += 1
                            labels_by_day[label.labeled_at.date(), out.source] += 1
                stats.learning_seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            scored = _score(core, tx)
            stats.scoring_seconds += time.perf_counter() - t0
            if scored is None:
                continue
            stats.transactions += 1
            score = scored.score
            if policy.enabled:
                feed.observe(tx.transaction_id, tx.card_id, tx.timestamp, score, record.is_fraud)
            if observe is not None:
                observe(scored, record.is_fraud)
            if writer is not None:
                writer.writerow([tx.transaction_id, f"{score:.6f}", scored.decision])
            if keep_from is not None and day >= keep_from:
                rows.append(
                    ScoredTransaction(
                        transaction_id=tx.transaction_id,
                        card_id=tx.card_id,
                        day=day,
                        score=score,
                        is_fraud=record.is_fraud,
                        alerted=scored.decision != "allow",
                    )
                )
            advance()
    stats.wall_seconds = time.perf_counter() - started
    weeks = [evaluate_week(rows, week, k=k) for week in test_weeks]
    in_weeks = [r for r in rows if any(w <= r.day < w + timedelta(days=7) for w in test_weeks)]
    return EvaluationResult(
        weeks=weeks,
        throughput=stats,
        labels_by_source=dict(core.model.labels_by_source),
        decisions=dict(core.model.decider.decisions),
        rows=rows,
        labels_by_day=labels_by_day,
        skipped_records=getattr(records, "skipped", 0),
        model=core.model,
        calibration=calibration_of(in_weeks),
    )


def _score(core: ScoringCore, tx: Any) -> Scored | None:
    for out in core.process(tx):
        if isinstance(out, Scored):
            return out
        if isinstance(out, Rejected):
            return None  # a duplicate id in the dataset: decided once, like production
    return None
