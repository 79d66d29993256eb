"""From a score to allow, review or block."""

from __future__ import annotations

import collections
from dataclasses import dataclass

from river import stats

from detector.contracts import DecisionKind


def decide(score: float, review: float, block: float) -> DecisionKind:
    """Block at or above ``block``, review at or above ``review``, else allow."""
    if score >= block:
        return "block"
    if score >= review:
        return "review"
    return "allow"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Scores at or above ``review`` are reviewed, at or above ``block`` blocked."""

    review: float = 0.6
    block: float = 0.9

    def __post_init__(self) -> None:
        if not 0.0 <= self.review <= self.block <= 1.0:
            raise ValueError(
                f"thresholds must satisfy 0 <= review <= block <= 1, got "
                f"review={self.review}, block={self.block}"
            )

    def decide(self, score: float) -> DecisionKind:
        return decide(score, self.review, self.block)

    def update(self, score: float) -> None:
        """Fixed thresholds learn nothing."""


class VolumeThresholds:
    """Thresholds that follow a target share of traffic, by streaming quantiles of scores.

    With ``review_share=0.01`` about 1% of transactions are reviewed or blocked, whatever
    the scale of the scores, so the alert volume matches the analysts' capacity as the
    models change. The quantiles are over the last ``window`` scores: the score
    distribution moves as the models learn, and thresholds must follow it. Until
    ``warmup`` scores have been seen, the ``fallback`` fixed thresholds decide. A score of
    0 is never alerted.

    The window's scores are also kept in order, so that :meth:`set_shares` can move to new
    shares at once, over the same scores, instead of starting over (River's rolling
    quantiles cannot change their quantile in place).

    Examples
    --------
    >>> t = VolumeThresholds(review_share=0.1, block_share=0.01, warmup=100, window=500)
    >>> for i in range(1000):
    ...     t.update((i % 100) / 100)
    >>> round(t.review, 2), round(t.block, 2)
    (0.89, 0.98)
    >>> t.decide(0.5), t.decide(0.95), t.decide(0.995)
    ('allow', 'review', 'block')
    >>> t.set_shares(review_share=0.2, block_share=0.05)
    >>> round(t.review, 2), round(t.block, 2)
    (0.79, 0.94)

    """

    def __init__(
        self,
        review_share: float = 0.01,
        block_share: float = 0.001,
        warmup: int = 1000,
        fallback: Thresholds | None = None,
        window: int = 20_000,
    ) -> None:
        _check_shares(review_share, block_share)
        self.review_share = review_share
        self.block_share = block_share
        self.warmup = warmup
        self.fallback = fallback or Thresholds()
        self.window = window
        self._review_q = stats.RollingQuantile(1.0 - review_share, window)
        self._block_q = stats.RollingQuantile(1.0 - block_share, window)
        self._recent: collections.deque[float] = collections.deque(maxlen=window)
        self._seen = 0

    def set_shares(self, review_share: float, block_share: float) -> None:
        """Follow new shares from now on, over the scores already in the window."""
        _check_shares(review_share, block_share)
        review_q = stats.RollingQuantile(1.0 - review_share, self.window)
        block_q = stats.RollingQuantile(1.0 - block_share, self.window)
        for score in self._recent:
            review_q.update(score)
            block_q.update(score)
        self.review_share, self.block_share = review_share, block_share
        self._review_q, self._block_q = review_q, block_q

    @property
    def review(self) -> float:
        if self._seen < self.warmup:
            return self.fallback.review
        return max(float(self._review_q.get() or 0.0), 1e-9)

    @property
    def block(self) -> float:
        if self._seen < self.warmup:
            return self.fallback.block
        return max(float(self._block_q.get() or 0.0), self.review)

    def decide(self, score: float) -> DecisionKind:
        return decide(score, self.review, self.block)

    def update(self, score: float) -> None:
        self._review_q.update(score)
        self._block_q.update(score)
        self._recent.append(score)
        self._seen += 1


def _check_shares(review_share: float, block_share: float) -> None:
    if not 0.0 < block_share <= review_share < 1.0:
        raise ValueError(
            f"shares must satisfy 0 < block_share <= review_share < 1, got "
            f"review_share={review_share}, block_share={block_share}"
        )
