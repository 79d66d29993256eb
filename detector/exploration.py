"""The exploration sample: a small random share of the transactions the model allowed,
put up for review anyway.

Analysts otherwise only ever see what the model alerted, so the labels it learns from
and is judged on are biased toward its own choices. The verdicts on a random sample of
the rest tell how many frauds it lets through, and so its recall over the whole traffic
(``detector.status``).

The sample is chosen by a hash of the transaction id, never by the score: a replay or a
restart chooses the same transactions, and the choice says nothing of the model. At
most ``max_per_hour`` (of transaction time, shared out over the model shards) are chosen
in an hour, so that a burst of traffic cannot flood the desk; below the cap, the hash
alone decides.
"""

from __future__ import annotations

import hashlib

__all__ = ["ExplorationSampler", "sample_point"]

HOUR = 3600.0
# Hours whose counts are kept: transactions arrive a little out of order (partitions,
# late payments), and each counts in its own hour.
HOURS_KEPT = 48
_SCALE = float(2**64)


def sample_point(transaction_id: str) -> float:
    """Where ``transaction_id`` falls in [0, 1): uniform over ids, the same every time.

    >>> sample_point("tx-1") == sample_point("tx-1"), 0 <= sample_point("tx-1") < 1
    (True, True)
    """
    digest = hashlib.blake2b(transaction_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest) / _SCALE


class ExplorationSampler:
    """Chooses the allowed transactions to review: a share of them, capped per hour.

    Parameters
    ----------
    share
        Share of the allowed transactions chosen (0 chooses none).
    max_per_hour
        Most transactions chosen per hour of transaction time, all shards together.
    shards
        Shards of the model step: each keeps its part of ``max_per_hour``.

    The counts (``seen``, ``chosen``) are what the status reports: the share actually
    chosen, lower than ``share`` when the hourly cap bit.

    Examples
    --------
    >>> s = ExplorationSampler(share=0.5, max_per_hour=2)
    >>> [s.choose(f"tx-{i}", at=10.0) for i in range(8)]
    [False, True, False, True, False, False, False, False]
    >>> s.seen, s.chosen  # tx-5 and tx-6 fall in the share too, past the hour's cap
    (8, 2)
    >>> s.choose("tx-5", at=3600.0)  # a new hour, a new cap
    True

    """

    def __init__(self, share: float = 0.002, max_per_hour: int = 30, shards: int = 1) -> None:
        self.share = share
        self.max_per_hour = max_per_hour
        self.shards = shards
        self.seen = 0  # allowed transactions offered
        self.chosen = 0  # of which chosen
        self._per_hour: dict[int, int] = {}  # hour of transaction time -> chosen in it

    def configure(self, share: float, max_per_hour: int, shards: int) -> None:
        """Follow the settings in force (after a restart), keeping the counts."""
        self.share = share
        self.max_per_hour = max_per_hour
        self.shards = shards

    @property
    def hourly_budget(self) -> float:
        """This shard's part of the hourly cap."""
        return self.max_per_hour / max(1, self.shards)

    def choose(self, transaction_id: str, *, at: float) -> bool:
        """Whether to put up the allowed transaction ``transaction_id`` (transaction time
        ``at``, epoch seconds) for review."""
        self.seen += 1
        if self.share <= 0 or sample_point(transaction_id) >= self.share:
            return False
        hour = int(at // HOUR)
        per_hour = self._per_hour
        chosen = per_hour.get(hour, 0)
        if chosen + 1 > self.hourly_budget:
            return False
        per_hour[hour] = chosen + 1
        if chosen == 0 and len(per_hour) > HOURS_KEPT:
            del per_hour[min(per_hour)]
        self.chosen += 1
        return True
