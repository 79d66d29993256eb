"""An unsupervised detector: how rare is a value this high, feature by feature."""

from __future__ import annotations

import math
import typing

from river.base import AnomalyDetector

__all__ = ["TailSurprise"]


class TailSurprise(AnomalyDetector):
    """Scores a transaction by how rarely values at least this high have been seen.

    For each feature a streaming histogram over fixed limits gives the share of past
    values at or above the current one (its survival); the score is one minus the
    geometric mean of those shares: 0.99 means "as rare as the top 1% on every feature".
    It is a one-sided, histogram-based outlier score (HBOS): large amounts and amounts
    far above the card's habits are suspicious, small ones are not. Values outside the
    limits fall into the edge bins. Counts halve every ``half_life`` updates, so the
    detector follows a changing population.

    Parameters
    ----------
    limits
        Feature name to (low, high): the range the histogram covers.
    bins
        Histogram bins per feature.
    half_life
        Updates after which old observations weigh half.
    prior
        Pseudo-observations spread evenly over each feature's range before the first
        one: a new detector finds a value near the top of the range rare (a 4,000
        payment on a fresh system is not scored 0), and real observations soon
        outweigh them.

    Examples
    --------
    >>> detector = TailSurprise({"amount": (0.0, 100.0)}, bins=10)
    >>> for i in range(1000):
    ...     detector.learn_one({"amount": float(i % 50)})
    >>> typical, huge = detector.score_one({"amount": 10.0}), detector.score_one({"amount": 90.0})
    >>> round(typical, 2), round(huge, 3)
    (0.2, 0.998)

    """

    def __init__(
        self,
        limits: dict[str, tuple[float, float]],
        bins: int = 50,
        half_life: int = 200_000,
        prior: float = 10.0,
    ) -> None:
        self.limits = limits
        self.bins = bins
        self.half_life = half_life
        self.prior = prior
        self._counts: dict[str, list[float]] = {name: [prior / bins] * bins for name in limits}
        # survival per bin: share of observations in this bin or above, refreshed lazily
        self._survival: dict[str, list[float]] = {name: [1.0] * bins for name in limits}
        self._total = prior
        self._stale = 0
        self._since_decay = 0
        self._refresh()

    def _bin(self, name: str, value: float) -> int:
        low, high = self.limits[name]
        position = (value - low) / (high - low) * self.bins
        if not position < self.bins:  # beyond the top, +inf, or NaN: the edge bin
            return self.bins - 1 if position == position else 0
        return max(0, int(position))

    def learn_one(self, x: dict[typing.Hashable, typing.Any]) -> None:
        for name, counts in self._counts.items():
            if name in x:
                counts[self._bin(name, x[name])] += 1.0
        self._total += 1.0
        self._stale += 1
        self._since_decay += 1
        if self._since_decay >= self.half_life:
            for counts in self._counts.values():
                counts[:] = [c / 2 for c in counts]
            self._total /= 2
            self._since_decay = 0
        # Recompute the survival curves often while young, then every 100 updates.
        if self._stale >= min(100, 1 + int(self._total) // 10):
            self._refresh()

    def _refresh(self) -> None:
        for name, counts in self._counts.items():
            survival = self._survival[name]
            running = 0.0
            for i in range(self.bins - 1, -1, -1):
                running += counts[i]
                # add-one smoothing: a value never seen before is rare, not impossible
                survival[i] = (running + 1.0) / (self._total + 1.0)
        self._stale = 0

    def score_one(self, x: dict[typing.Hashable, typing.Any]) -> float:
        if self._total <= 0:
            return 0.0
        surprise = 0.0
        n = 0
        for name, survival in self._survival.items():
            if name in x:
                surprise -= math.log(min(1.0, survival[self._bin(name, x[name])]))
                n += 1
        return 1.0 - math.exp(-surprise / n) if n else 0.0
