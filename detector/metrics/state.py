"""The sizes of the keyed state: cards, terminals, features waiting for labels, parked
labels; kept per worker thread and summed at scrape time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class _WorkerSizes:
    """State sizes held by one worker thread (only that thread writes them)."""

    __slots__ = ("cards", "parked", "pending", "terminals")

    def __init__(self) -> None:
        self.cards = 0
        self.terminals = 0
        self.pending = 0
        self.parked = 0


class StateSizes:
    """Entries held by the keyed steps, one slot per worker thread, summed at scrape time.

    A worker updates its own slot without a lock; Bytewax runs each key's logic on one
    worker thread.
    """

    def __init__(self) -> None:
        # By thread id: Bytewax's workers are threads Python did not start, whose
        # ``threading.local`` values do not last from one call into Python to the next.
        self._slots: dict[int, _WorkerSizes] = {}
        self._lock = threading.Lock()
        # Features waiting for labels in an on-disk store: its row count, read at scrape
        self.stored_pending: Callable[[], int] | None = None

    def worker(self) -> _WorkerSizes:
        """The calling thread's slot."""
        thread = threading.get_ident()
        slot = self._slots.get(thread)
        if slot is None:
            with self._lock:
                slot = self._slots.setdefault(thread, _WorkerSizes())
        return slot

    def totals(self) -> tuple[int, int, int, int]:
        """(cards, terminals, pending labels, parked labels) over this process's workers."""
        with self._lock:
            slots = list(self._slots.values())
        return (
            sum(s.cards for s in slots),
            sum(s.terminals for s in slots),
            sum(s.pending for s in slots) + (self.stored_pending() if self.stored_pending else 0),
            sum(s.parked for s in slots),
        )


class StateCollector(Collector):
    def __init__(self, sizes: StateSizes) -> None:
        self._sizes = sizes

    def collect(self) -> Iterator[Metric]:
        cards, terminals, pending, parked = self._sizes.totals()
        yield GaugeMetricFamily(
            "fraudstream_state_cards", "Cards with state in this process.", value=cards
        )
        yield GaugeMetricFamily(
            "fraudstream_state_terminals", "Terminals with state in this process.", value=terminals
        )
        yield GaugeMetricFamily(
            "fraudstream_state_pending_labels",
            "Scored transactions whose features are kept for a label, in this process.",
            value=pending,
        )
        yield GaugeMetricFamily(
            "fraudstream_state_parked_labels",
            "Labels waiting for a transaction not seen yet, in this process.",
            value=parked,
        )
