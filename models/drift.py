"""Shifts in the mean of a few named values (scores, features, fraud labels) over time."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

from river import base

__all__ = ["MeanShift"]


class Shift(NamedTuple):
    """A value whose mean moved: from ``before`` (the reference) to ``after`` (the mean of
    ``values`` values since ``since``), ``z`` standard errors away."""

    name: str
    before: float
    after: float
    z: float
    values: int
    since: float


class _Stream:
    """One value's reference (decayed mean and mean square) and current interval."""

    __slots__ = (
        "alarmed",
        "count",
        "mean",
        "n",
        "ready",
        "square",
        "started",
        "sum",
        "sum_sq",
        "var",
        "weight",
    )

    def __init__(self) -> None:
        self.mean = 0.0
        self.square = 0.0
        self.weight = 0.0  # values behind the reference, decayed
        self.n = 0  # values behind the reference, all told
        self.sum = 0.0
        self.sum_sq = 0.0
        self.count = 0
        self.started = 0.0
        self.alarmed = False
        self.var = 0.0  # of single values, in the reference
        self.ready = False  # warmed up and not alarmed: compared as values come


class MeanShift(base.Base):
    """Notices when the mean of a value moves away from its recent past.

    Values come in event time and are grouped in aligned intervals of
    ``interval_seconds``. Each value's reference is the mean and spread of its past
    intervals, old values weighing half after ``half_life`` values. As soon as the
    current interval holds ``min_count`` values or more, its mean is compared with the
    reference: ``threshold`` standard errors away or more (and ``min_change`` standard
    deviations or more, so that a large sample does not flag a trivial move) is a shift.
    A shift is reported once; the reference then learns the new level, and a value is
    watched again once an interval of ``min_count`` values or more is back within half
    the threshold.
    Nothing is reported before ``warmup`` values are in the reference.

    The cost per value is a few additions; the comparison is made once the interval is
    large enough, a few multiplications.

    Parameters
    ----------
    interval_seconds
        Width of the intervals, in event time.
    min_count
        Fewest values in the current interval before it is compared.
    threshold
        Standard errors between the interval's mean and the reference for a shift.
    min_change
        Fewest standard deviations (of single values) between them for a shift.
    half_life
        Values after which a value weighs half in the reference.
    warmup
        Values in the reference before any shift is reported.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(1)
    >>> watch = MeanShift(interval_seconds=60.0, min_count=10)
    >>> shifts = []
    >>> for i in range(3000):  # a value every 6 seconds, tripled after 4 hours
    ...     x = rng.gauss(50.0, 10.0) * (3.0 if i >= 2400 else 1.0)
    ...     shifts += watch.observe(i * 6.0, {"amount": x})
    >>> [(s.name, round(s.before), round(s.after), s.since) for s in shifts]
    [('amount', 50, 141, 14400.0)]

    """

    def __init__(
        self,
        interval_seconds: float = 60.0,
        min_count: int = 10,
        threshold: float = 6.0,
        min_change: float = 0.5,
        half_life: float = 2000.0,
        warmup: int = 200,
    ) -> None:
        self.interval_seconds = interval_seconds
        self.min_count = min_count
        self.threshold = threshold
        self.min_change = min_change
        self.half_life = half_life
        self.warmup = warmup
        self._streams: dict[str, _Stream] = {}
        self._interval: int | None = None

    def reference(self, name: str) -> tuple[float, float] | None:
        """The reference mean and standard deviation of ``name``, once it has one."""
        stream = self._streams.get(name)
        if stream is None or stream.weight <= 0.0:
            return None
        return stream.mean, math.sqrt(max(0.0, stream.square - stream.mean**2))

    def observe(self, ts: float, values: Mapping[str, float]) -> list[Shift]:
        """Count ``values`` seen at ``ts``; the shifts noticed with them."""
        self._advance(ts)
        shifts: list[Shift] = []
        for name, x in values.items():
            shift = self._add(name, ts, x)
            if shift is not None:
                shifts.append(shift)
        return shifts

    def observe_one(self, ts: float, name: str, x: float) -> Shift | None:
        """Count one value ``x`` of ``name`` seen at ``ts``; the shift noticed with it."""
        self._advance(ts)
        return self._add(name, ts, x)

    def _advance(self, ts: float) -> None:
        interval = math.floor(ts / self.interval_seconds)
        if self._interval is None or interval > self._interval:
            self._close(interval * self.interval_seconds)
            self._interval = interval

    def _add(self, name: str, ts: float, x: float) -> Shift | None:
        # Called for every transaction: a few additions, and the comparison without
        # square roots (squared standard errors against the squared threshold).
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = _Stream()
        n = stream.count
        if not n:
            stream.started = ts
        stream.sum += x
        stream.sum_sq += x * x
        stream.count = n = n + 1
        if not stream.ready or n < self.min_count:
            return None
        moved = stream.sum / n - stream.mean
        moved2, var = moved * moved, stream.var
        if not moved2 or moved2 * n < self.threshold**2 * var or moved2 < self.min_change**2 * var:
            return None
        shift = self._compare(name, stream)
        if shift is not None:
            stream.alarmed = True
            stream.ready = False
        return shift

    def _compare(self, name: str, stream: _Stream) -> Shift | None:
        after, z = _moved(stream)
        if abs(z) < self.threshold or not math.isfinite(after):
            return None
        sd = math.sqrt(max(0.0, stream.square - stream.mean**2))
        if abs(after - stream.mean) < self.min_change * sd:
            return None
        return Shift(name, stream.mean, after, z, stream.count, stream.started)

    def _close(self, start: float) -> None:
        """Fold the intervals that ended into the references."""
        for stream in self._streams.values():
            n = stream.count
            if not n:
                continue
            # Back to normal takes an interval full enough to compare: a few values near the
            # old mean say nothing, and would report the same shift again.
            if (
                stream.alarmed
                and n >= self.min_count
                and abs(_moved(stream)[1]) < self.threshold / 2
            ):
                stream.alarmed = False
            mean, square = stream.sum / n, stream.sum_sq / n
            if math.isfinite(mean) and math.isfinite(square):
                keep = 0.5 ** (n / self.half_life)
                total = stream.weight * keep + n
                share = n / total
                stream.mean += share * (mean - stream.mean)
                stream.square += share * (square - stream.square)
                stream.weight = total
                stream.n += n
                stream.var = max(0.0, stream.square - stream.mean**2)
            stream.ready = stream.n >= self.warmup and not stream.alarmed
            stream.sum = stream.sum_sq = 0.0
            stream.count = 0
            stream.started = start


def _moved(stream: _Stream) -> tuple[float, float]:
    """The current interval's mean, and how many standard errors it is from the
    reference (infinite for any move from a reference without spread)."""
    n = stream.count
    after = stream.sum / n
    moved = after - stream.mean
    sd = math.sqrt(max(0.0, stream.square - stream.mean**2))
    if sd > 0.0:
        return after, moved / (sd / math.sqrt(n))
    return after, math.copysign(math.inf, moved) if moved else 0.0
