"""Bursts at one terminal: many distinct cards, or many small amounts, in minutes."""

from __future__ import annotations

import collections
import math

from river import base

__all__ = ["BurstWatch"]

BURST = "terminal_burst"
CARD_TESTING = "card_testing"


class BurstWatch(base.Base):
    """Counts the cards and small amounts of one terminal over a sliding window, against
    what the terminal usually sees in a window.

    A *terminal burst* is ``min_cards`` distinct cards or more in the last
    ``window_seconds``, and ``ratio`` times the terminal's usual or more; *card testing*
    is ``min_small`` transactions of at most ``small_amount`` or more in the window, and
    ``ratio`` times the usual cards or more. Either stays on for ``hold_seconds`` after
    the last transaction that met it.

    The usual is the mean number of distinct cards in the windows (fixed, aligned) in
    which the terminal saw a transaction, old windows weighing half after
    ``half_life_windows`` windows. Windows seen during a burst are left out, so that an
    attack does not teach the terminal that attacks are usual (as River's
    ``QuantileFilter`` protects its detector).

    Parameters
    ----------
    window_seconds
        The sliding window, in event time.
    min_cards
        Fewest distinct cards in the window for a burst.
    ratio
        Fewest times the usual for a burst or card testing.
    small_amount
        Amounts at or below this count as small (card testing).
    min_small
        Fewest small amounts in the window for card testing.
    hold_seconds
        How long a burst stays on after the last transaction that met it.
    half_life_windows
        Active windows after which a window weighs half in the usual.

    Examples
    --------
    >>> watch = BurstWatch(window_seconds=300, min_cards=10, ratio=5.0)
    >>> for day in range(20):  # two cards a day, at lunch
    ...     for card in ("a", "b"):
    ...         _ = watch.observe(day * 86400.0 + 43200.0, card, 40.0)
    >>> round(watch.usual, 1)
    2.0
    >>> started = [watch.observe(21 * 86400.0 + i, f"c{i}", 1.0) for i in range(12)]
    >>> [kinds for kinds in started if kinds]
    [('card_testing', 'terminal_burst')]
    >>> watch.cards_in_window, watch.small_in_window, watch.active(21 * 86400.0 + 20)
    (12, 12, True)

    """

    def __init__(
        self,
        window_seconds: float = 300.0,
        min_cards: int = 10,
        ratio: float = 5.0,
        small_amount: float = 5.0,
        min_small: int = 10,
        hold_seconds: float = 3600.0,
        half_life_windows: float = 100.0,
    ) -> None:
        self.window_seconds = window_seconds
        self.min_cards = min_cards
        self.ratio = ratio
        self.small_amount = small_amount
        self.min_small = min_small
        self.hold_seconds = hold_seconds
        self.half_life_windows = half_life_windows
        # the sliding window: (time, card, small) oldest first, cards counted in it
        self._recent: collections.deque[tuple[float, str, bool]] = collections.deque()
        self._cards: dict[str, int] = {}
        self._small = 0
        # the aligned window being counted for the usual, and its cards
        self._bucket: float | None = None
        self._bucket_cards: set[str] = set()
        self._bucket_in_burst = False
        self._usual_sum = 0.0  # decayed sums: the usual is their ratio
        self._usual_weight = 0.0
        # kind -> (since, until, most counted) of the burst on or last on
        self._bursts: dict[str, tuple[float, float, int]] = {}
        self._latest = -math.inf  # the latest transaction time seen

    @property
    def usual(self) -> float:
        """Distinct cards the terminal usually sees in a window it is active in (1 before
        it has history)."""
        if self._usual_weight <= 0.0:
            return 1.0
        return self._usual_sum / self._usual_weight

    @property
    def cards_in_window(self) -> int:
        return len(self._cards)

    @property
    def small_in_window(self) -> int:
        return self._small

    def active(self, ts: float) -> bool:
        """Whether a burst or card testing is on at ``ts``."""
        if not self._bursts:  # the usual case: never one at this terminal
            return False
        return any(self.on(kind, ts) for kind in self._bursts)

    def on(self, kind: str, ts: float) -> bool:
        """Whether a ``kind`` burst is on at ``ts`` (or at the latest time seen, if later:
        transactions may come out of order, and a late one does not end a burst)."""
        burst = self._bursts.get(kind)
        return burst is not None and max(ts, self._latest) < burst[1]

    def burst(self, kind: str) -> tuple[float, float, int] | None:
        """``(since, until, peak)`` of the last ``kind`` burst, if any: ``peak`` is the
        most cards (or small amounts) it counted in a window."""
        return self._bursts.get(kind)

    def top_cards(self, n: int) -> list[str]:
        """The cards of the window, most transactions first."""
        ranked = sorted(self._cards.items(), key=lambda item: -item[1])
        return [card for card, _ in ranked[:n]]

    def observe(self, ts: float, card_id: str, amount: float) -> tuple[str, ...]:
        """Count one transaction; the kinds of burst (``terminal_burst``,
        ``card_testing``) that start with it."""
        # Every transaction of every terminal comes here: kept to a few microseconds.
        window = self.window_seconds
        bucket = ts // window
        if bucket != self._bucket:
            self._roll(bucket)
        if ts > self._latest:
            self._latest = ts
        small = amount <= self.small_amount
        recent = self._recent
        recent.append((ts, card_id, small))
        cards = self._cards
        cards[card_id] = cards.get(card_id, 0) + 1
        if small:
            self._small += 1
        self._bucket_cards.add(card_id)
        horizon = ts - window
        while recent[0][0] <= horizon:
            _, card, was_small = recent.popleft()
            if was_small:
                self._small -= 1
            left = cards[card] - 1
            if left:
                cards[card] = left
            else:
                del cards[card]
        if self._bursts and self.active(ts):
            self._bucket_in_burst = True
        if len(cards) < self.min_cards and self._small < self.min_small:
            return ()
        floor = self.ratio * max(1.0, self.usual)
        started: list[str] = []
        if self._small >= self.min_small and self._small >= floor:
            started += self._on(CARD_TESTING, ts, self._small)
        if len(cards) >= self.min_cards and len(cards) >= floor:
            started += self._on(BURST, ts, len(cards))
        if started:
            self._bucket_in_burst = True
        return tuple(started)

    def _on(self, kind: str, ts: float, count: int) -> list[str]:
        until = max(ts, self._latest) + self.hold_seconds
        current = self._bursts.get(kind)
        if current is not None and self.on(kind, ts):
            self._bursts[kind] = (current[0], max(current[1], until), max(current[2], count))
            return []
        # the start: the window's first transaction (in event time: they may come a
        # little out of order)
        self._bursts[kind] = (min(t for t, _, _ in self._recent), until, count)
        return [kind]

    def _roll(self, bucket: float) -> None:
        """Fold the aligned window that ended into the usual (``bucket``: the number of
        the window a transaction falls in)."""
        if self._bucket is None:
            self._bucket = bucket
            return
        if bucket <= self._bucket:
            return
        if self._bucket_cards and not self._bucket_in_burst:
            keep = 0.5 ** (1.0 / self.half_life_windows)
            self._usual_sum = self._usual_sum * keep + len(self._bucket_cards)
            self._usual_weight = self._usual_weight * keep + 1.0
        self._bucket = bucket
        self._bucket_cards.clear()
        self._bucket_in_burst = False
