"""MeanShift: a shift is reported once, and watched again only when an interval with
enough values to compare is back to normal."""

from __future__ import annotations

import random

from models.drift import MeanShift, Shift

MINUTE = 60.0


def _interval(
    watch: MeanShift, rng: random.Random, minute: int, n: int, mean: float
) -> list[Shift]:
    shifts: list[Shift] = []
    for i in range(n):
        shifts += watch.observe(minute * MINUTE + i * MINUTE / (n + 1), {"x": rng.gauss(mean, 1)})
    return shifts


def _shifted(few: int) -> list[tuple[int, Shift]]:
    """30 normal minutes of 20 values, a shift of +3, then a minute of ``few`` values
    back at normal, then the shift again: the shifts reported, by minute."""
    rng = random.Random(4)
    watch = MeanShift(interval_seconds=MINUTE, min_count=10, threshold=8.0, warmup=200)
    reported: list[tuple[int, Shift]] = []
    plan = [(m, 20, 0.0) for m in range(30)]
    plan += [(30, 20, 3.0), (31, 20, 3.0), (32, few, 0.0), (33, 20, 3.0), (34, 20, 3.0)]
    for minute, n, mean in plan:
        reported += [(minute, s) for s in _interval(watch, rng, minute, n, mean)]
    return reported


def test_a_shift_is_reported_once_though_a_sparse_interval_looks_normal() -> None:
    reported = _shifted(few=3)
    assert [m for m, _ in reported] == [30]
    shift = reported[0][1]
    assert shift.name == "x" and shift.before < 0.5 and shift.after > 2.0


def test_a_full_interval_back_to_normal_watches_again() -> None:
    reported = _shifted(few=20)
    assert [m for m, _ in reported] == [30, 33]
