"""What a card did before: the per-card feature state, and the transactions it knows.

``CardProfile`` keeps the card's log and the counts and exact sums of its windows;
``models.card_features`` turns those into the features of its next transaction.
"""

from __future__ import annotations

import bisect
import hashlib
import typing
from array import array

from river import base

from models.card_features import (
    HOUR,
    LARGE_RATIO,
    SCALE_BITS,
    Aggregates,
    bounded_amount,
    card_features,
    scaled_amount,
)
from models.frauds import ConfirmedFrauds
from models.packing import (
    pack_amounts,
    pack_int64,
    pack_times,
    pack_uints,
    unpack_amounts,
    unpack_int64,
    unpack_times,
    unpack_uints,
)

__all__ = ["CardProfile", "transaction_key"]

DAY = 86400.0


def transaction_key(transaction_id: str) -> int:
    """The 64-bit key a card remembers a transaction id by (never 0, which means none).

    The key is the id's BLAKE2b digest cut to 8 bytes. Two ids share a key with odds of
    2**-64, so a new transaction is taken for one the card knows with odds of at most
    ``max_events`` in 2**64 (1,000 keys: 5e-17; a typical card holds under 100 over the
    45-day label horizon): over 10**12 transactions, years of a large issuer, the
    expected number of transactions wrongly rejected as duplicates (or labels routed to
    the wrong transaction) is below 1e-4. Ids are assigned by the payment network, not
    chosen by the card holder, and a deliberate collision would take about 2**64 tries.

    >>> transaction_key("tx-1") == transaction_key("tx-1") != transaction_key("tx-2")
    True

    """
    global _last_key
    last = _last_key  # one read: another thread may replace it (never change it)
    if transaction_id == last[0]:
        return last[1]
    digest = hashlib.blake2b(
        transaction_id.encode("utf-8", "surrogatepass"), digest_size=8
    ).digest()
    key = int.from_bytes(digest, "little", signed=True) or 1
    _last_key = (transaction_id, key)
    return key


# The latest id and its key: a transaction's id is hashed when the card checks it is new
# and again when the card remembers it, one right after the other.
_last_key: tuple[str | None, int] = (None, 0)


# The windows over the log, each from its oldest entry to the newest. The first three
# keep exact sums of their amounts (and the history, of their squares).
_HISTORY, _WEEK, _DAY, _HOUR, _IDS = range(5)
_SUMMED = (_HISTORY, _WEEK, _DAY)


def _largest(week: array[float], history_sum: int, history: int) -> tuple[float, int]:
    """The largest of the week's amounts, and how many are at least ``LARGE_RATIO``
    times the mean of the history (its exact sum, scaled, over ``history`` amounts)."""
    if not week or not history:
        return 0.0, 0
    large = LARGE_RATIO * (history_sum / (history << SCALE_BITS))
    top = max(week)
    # most cards have none: counting them is then not needed
    return top, sum(map(large.__le__, week)) if top >= large else 0


class CardProfile(base.Base):
    """Sliding-window history of one card, turned into features for its next transaction;
    and the ids of its recent transactions, to recognise duplicates and route labels.

    One log holds the card's transactions in time order, as parallel arrays: times,
    amounts, terminals (as indices into a small table of the card's terminals) and
    64-bit keys of the transaction ids. The history, week, day and hour windows and the
    ids of the label horizon are suffixes of it, each with the index of its oldest
    transaction; the windows keep exact sums of their amounts, so a feature costs the
    same for a card with one transaction a month as for one with hundreds. Pickled, a
    month of a typical card (60 transactions) takes under 1 KB.

    A late transaction takes its place in time: what is forgotten is decided by the
    latest transaction, and the features of a late one count only what came before it.

    Parameters
    ----------
    history_days
        How far back, in event time, transactions count in the features.
    max_events
        Most transactions remembered, for the features and the ids alike; the oldest
        are forgotten first.
    label_horizon_days
        How far back, in event time, transaction ids are remembered (see ``knows``).

    Examples
    --------
    >>> card = CardProfile()
    >>> for day in range(10):
    ...     card.observe(day * 86400.0, 20.0, "t1", transaction_id=f"tx-{day}")
    >>> x = card.features(10 * 86400.0, 200.0, "t9")
    >>> x["card_amount_ratio"], x["card_new_terminal"], x["card_tx_7d"]
    (10.0, 1.0, 7.0)

    Windows include their boundary: the transaction of day 3 is exactly 7 days old and
    counts in ``card_tx_7d`` (days 3 to 9).

    The card knows its transactions, with their time and terminal, for
    ``label_horizon_days``:

    >>> card.knows("tx-3"), card.knows("tx-10"), card.ids_held
    ((259200.0, 't1'), None, 10)
    >>> card.observe(50 * 86400.0, 20.0, "t2", transaction_id="tx-50")
    >>> card.knows("tx-3"), card.ids_held, len(card)
    (None, 6, 1)

    """

    def __init__(
        self, history_days: float = 30.0, max_events: int = 1000, label_horizon_days: float = 45.0
    ) -> None:
        self.history_days = history_days
        self.max_events = max_events
        self.label_horizon_days = label_horizon_days
        self._setup()
        self._frauds = ConfirmedFrauds(history_days)

    def _setup(self) -> None:
        """Empty log and windows."""
        self._spans = (
            self.history_days * DAY,
            7 * DAY,
            DAY,
            HOUR,
            self.label_horizon_days * DAY,
        )
        self._times = array("d")
        self._amounts = array("d")  # bounded
        self._terminal_of = array("I")  # index into self._terminals
        self._keys = array("q")  # transaction_key of the id, 0 without one
        self._terminals: list[str] = []
        # index of the oldest entry of each window (the log starts at the smallest)
        self._first = [0, 0, 0, 0, 0]
        # exact sums of the scaled amounts in the history, week and day windows
        self._sums = [0, 0, 0]
        self._squares = 0  # ... and of their squares in the history

    # --- what the card knows -------------------------------------------------------

    def __len__(self) -> int:
        """Transactions in the history window (as of the latest one)."""
        return len(self._times) - self._first[_HISTORY]

    @property
    def last_seen(self) -> float | None:
        """Time of the card's latest transaction in its history, if any."""
        return self._times[-1] if len(self) else None

    @property
    def ids_held(self) -> int:
        """Transaction ids remembered (see ``knows``)."""
        first = self._first[_IDS]
        keys = self._keys
        return len(keys) - first - keys[first:].count(0)

    def knows(self, transaction_id: str) -> tuple[float, str] | None:
        """Time and terminal of the card's transaction ``transaction_id``, if remembered.

        Ids are remembered for ``label_horizon_days`` before the card's latest
        transaction, and for its latest ``max_events`` transactions at most.
        """
        first = self._first[_IDS]
        keys = self._keys
        if first == len(keys):
            return None
        key = transaction_key(transaction_id)
        if key not in keys:
            return None
        try:
            i = keys.index(key, first)
        except ValueError:  # forgotten: only before the label horizon
            return None
        return self._times[i], self._terminals[self._terminal_of[i]]

    # --- features ------------------------------------------------------------------

    def features(self, ts: float, amount: float, terminal_id: str) -> dict[str, float]:
        """Features of a transaction at ``ts``, from the history before it (not updated)."""
        amount = bounded_amount(amount)
        frauds = self._frauds.count(ts, days=14)
        return card_features(ts, amount, self._aggregates(ts, terminal_id), frauds)

    def _aggregates(self, ts: float, terminal_id: str) -> Aggregates:
        """The windows' counts and sums as seen from ``ts``, without changing them."""
        times = self._times
        n = len(times)
        if n and ts < times[-1]:
            return self._scan(ts, terminal_id)  # a late transaction: the rare, slow path
        amounts, spans = self._amounts, self._spans
        first_history, first_week, first_day, first_hour, _ = self._first
        # Each window as of ``ts``: without what has fallen out of it by then.
        history = bisect.bisect_left(times, ts - spans[_HISTORY], first_history, n)
        week = bisect.bisect_left(times, ts - spans[_WEEK], first_week, n)
        day = bisect.bisect_left(times, ts - spans[_DAY], first_day, n)
        hour = bisect.bisect_left(times, ts - spans[_HOUR], first_hour, n)
        history_sum, week_sum, day_sum = self._sums
        history_squares = self._squares
        if history > first_history:
            stale = list(map(scaled_amount, amounts[first_history:history]))
            history_sum -= sum(stale)
            history_squares -= sum(s * s for s in stale)
        if week > first_week:
            week_sum -= sum(map(scaled_amount, amounts[first_week:week]))
        if day > first_day:
            day_sum -= sum(map(scaled_amount, amounts[first_day:day]))
        week_max, week_large = _largest(amounts[week:n], history_sum, n - history)
        return Aggregates(
            n - hour,
            n - day,
            day_sum,
            n - week,
            week_sum,
            n - history,
            history_sum,
            history_squares,
            self._used_since(history, n, terminal_id),
            times[-1] if history < n else None,
            week_max,
            week_large,
        )

    def _scan(self, ts: float, terminal_id: str) -> Aggregates:
        """Aggregates from the log itself, ignoring what came after ``ts``."""
        times, amounts = self._times, self._amounts
        end = bisect.bisect_right(times, ts)
        counts = [0, 0, 0, 0]
        sums = [0, 0, 0]
        squares = 0
        start = end
        for w in (_HISTORY, _WEEK, _DAY, _HOUR):
            i = max(self._first[w], bisect.bisect_left(times, ts - self._spans[w], 0, end))
            i = min(i, end)
            counts[w] = end - i
            if w in _SUMMED:
                scaled = list(map(scaled_amount, amounts[i:end]))
                sums[w] = sum(scaled)
                if w == _HISTORY:
                    squares = sum(s * s for s in scaled)
            if w == _HISTORY:
                start = i
        week_start = end - counts[_WEEK]
        week_max, week_large = _largest(amounts[week_start:end], sums[_HISTORY], counts[_HISTORY])
        return Aggregates(
            hour=counts[_HOUR],
            day=counts[_DAY],
            day_sum=sums[_DAY],
            week=counts[_WEEK],
            week_sum=sums[_WEEK],
            history=counts[_HISTORY],
            history_sum=sums[_HISTORY],
            history_squares=squares,
            same_terminal=self._used_since(start, end, terminal_id),
            last=times[end - 1] if counts[_HISTORY] else None,
            week_max=week_max,
            week_large=week_large,
        )

    def _used_since(self, start: int, end: int, terminal_id: str) -> bool:
        """Whether the transactions ``start`` to ``end`` include one at ``terminal_id``."""
        if start >= end or terminal_id not in self._terminals:
            return False
        return self._terminals.index(terminal_id) in self._terminal_of[start:end]

    # --- learning --------------------------------------------------------------------

    def observe(
        self,
        ts: float,
        amount: float,
        terminal_id: str,
        *,
        transaction_id: str | None = None,
    ) -> None:
        """Remember a transaction (and its id, if given); forget what fell out of the
        windows and the label horizon, and what is beyond ``max_events``."""
        amount = bounded_amount(amount)
        times = self._times
        n = len(times)
        at = n if not n or ts >= times[-1] else bisect.bisect_right(times, ts)
        terminal = self._terminal_index(terminal_id)
        key = transaction_key(transaction_id) if transaction_id is not None else 0
        first, sums = self._first, self._sums
        scaled = scaled_amount(amount)
        if at == n:  # the usual case: the latest transaction, in every window
            times.append(ts)
            self._amounts.append(amount)
            self._terminal_of.append(terminal)
            self._keys.append(key)
            sums[_HISTORY] += scaled
            sums[_WEEK] += scaled
            sums[_DAY] += scaled
            self._squares += scaled * scaled
        else:  # a late transaction takes its place in time
            times.insert(at, ts)
            self._amounts.insert(at, amount)
            self._terminal_of.insert(at, terminal)
            self._keys.insert(at, key)
            for w in range(len(first)):
                if first[w] > at:  # older than the window's oldest: not in it
                    first[w] += 1
                elif w < len(sums):
                    sums[w] += scaled
            if first[_HISTORY] <= at:
                self._squares += scaled * scaled
        n += 1
        # Forget what is older than each window as of the latest time, and the oldest
        # beyond max_events.
        latest = times[-1]
        cut = min(n, max(0, n - self.max_events))
        for w, span in enumerate(self._spans):
            oldest = bisect.bisect_left(times, latest - span, max(first[w], cut), n)
            if oldest > first[w]:
                self._forget(w, oldest)
        drop = min(first)
        if drop:
            del times[:drop]
            del self._amounts[:drop]
            del self._terminal_of[:drop]
            del self._keys[:drop]
            for w in range(len(first)):
                first[w] -= drop
        self._frauds.forget_before(ts)

    def _forget(self, window: int, upto: int) -> None:
        """Move ``window``'s oldest entry up to index ``upto``, out of its sums."""
        first = self._first[window]
        if window < len(self._sums):
            scaled = list(map(scaled_amount, self._amounts[first:upto]))
            self._sums[window] -= sum(scaled)
            if window == _HISTORY:
                self._squares -= sum(s * s for s in scaled)
        self._first[window] = upto

    def _terminal_index(self, terminal_id: str) -> int:
        """The index of ``terminal_id`` in the terminal table, adding it if needed."""
        terminals = self._terminals
        if terminal_id in terminals:
            return terminals.index(terminal_id)
        # Terminals the log no longer uses are dropped from the table once they could
        # be half of it, so that the table stays as small as the log.
        if len(terminals) >= 2 * len(self._times) + 8:
            self._terminals, self._terminal_of = self._live_terminals()
            terminals = self._terminals
        terminals.append(terminal_id)
        return len(terminals) - 1

    def _live_terminals(self) -> tuple[list[str], array[int]]:
        """The terminal table without the terminals no transaction uses, in the same order,
        and the log's indices into it."""
        used = sorted(set(self._terminal_of))
        if len(used) == len(self._terminals):
            return self._terminals, self._terminal_of
        new_index = dict(zip(used, range(len(used)), strict=True))
        return (
            [self._terminals[i] for i in used],
            array("I", map(new_index.__getitem__, self._terminal_of)),
        )

    def record_label(self, transaction_id: str, ts: float, *, is_fraud: bool) -> None:
        """Remember the verdict on one of this card's transactions."""
        self._frauds.record(transaction_id, ts, is_fraud=is_fraud)

    # --- pickling --------------------------------------------------------------------

    def __getstate__(self) -> tuple[object, ...]:
        # Only what cannot be derived: the log, packed (see models.packing), and where
        # each window starts. Amounts are kept from the oldest window entry on and keys
        # from the oldest remembered id on: before that they are never read again.
        first = self._first
        amounts_from = min(first[:_IDS])
        terminals, terminal_of = self._live_terminals()
        keys = self._keys[first[_IDS] :]
        return (
            self.history_days,
            self.max_events,
            self.label_horizon_days,
            len(self._times),
            tuple(first),
            pack_times(self._times),
            pack_amounts(self._amounts[amounts_from:]),
            pack_uints(terminal_of),
            # one string is smaller than a list of them (unless an id is empty or has a newline)
            terminals if any(not t or "\n" in t for t in terminals) else "\n".join(terminals),
            pack_int64(keys) if any(keys) else b"",
            self._frauds.held(),
        )

    def __setstate__(self, state: tuple[typing.Any, ...]) -> None:
        (
            self.history_days,
            self.max_events,
            self.label_horizon_days,
            n,
            first,
            times,
            amounts,
            terminal_of,
            terminals,
            keys,
            frauds,
        ) = state
        self._setup()
        if isinstance(terminals, str):
            terminals = terminals.split("\n") if terminals else []
        self._terminals = terminals
        self._first = list(first)
        amounts_from = min(self._first[:_IDS])
        self._times = unpack_times(times, n)
        self._amounts = array("d", bytes(8 * amounts_from))
        self._amounts.extend(unpack_amounts(amounts, n - amounts_from))
        self._terminal_of = array("I", unpack_uints(terminal_of, n))
        self._keys = array("q", bytes(8 * self._first[_IDS]))
        self._keys.extend(unpack_int64(keys) if keys else array("q", bytes(8 * (n - first[_IDS]))))
        for w in _SUMMED:
            scaled = list(map(scaled_amount, self._amounts[self._first[w] :]))
            self._sums[w] = sum(scaled)
            if w == _HISTORY:
                self._squares = sum(s * s for s in scaled)
        self._frauds = ConfirmedFrauds(self.history_days)
        for transaction_id, when in frauds.items():
            self._frauds.record(transaction_id, when, is_fraud=True)
