"""The keyed steps as Bytewax stateful logic around the pure step functions.

Each logic wraps one ``(state, event, config) -> (state, outputs)`` function of the
scoring core (``card_step``, ``terminal_step``, ``model_step``), counts the state it
holds for the metrics, runs each item under a guard (an exception dead-letters that
item), and leaves the state once nothing of it can matter any more.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from bytewax.operators import StatefulBatchLogic, StatefulLogic

from detector.cards import CardState, card_idle, card_step, expire_parked, parked_until
from detector.contracts import Control, ModelStatus, Transaction
from detector.flow.snapshots import Snapshot, freeze, thaw
from detector.flow.stamped import (
    Event,
    ModelItem,
    ShardIn,
    Stamped,
    in_arrival_order,
    step_error,
    step_rejection,
)
from detector.items import (
    CardOut,
    ControlApplied,
    LabelToLearn,
    ModelIn,
    ModelOut,
    RoutedLabel,
    Scored,
    TerminalIn,
    TerminalOut,
)
from detector.metrics import DetectorMetrics
from detector.published import Published
from detector.scoring import ModelState, ensure_models, model_step, new_model_state
from detector.settings import ScoringSettings
from detector.shards import shard_of
from detector.status import ShardSummary, merge_statuses, summarize
from detector.terminals import TerminalState, terminal_idle, terminal_step
from detector.waiting import PURGE_MARGIN_SECONDS, StoredPending, waiting_store
from models import PendingFeatures

log = structlog.get_logger(__name__)

# How often an idle card or terminal checks whether it can leave the state (wall clock).
IDLE_CHECK_SECONDS = 60.0


class CardLogic(StatefulLogic[Stamped[Event], Stamped[CardOut], Snapshot]):
    """``card_step`` for one card; counts the cards and parked labels of this worker.

    A label that waits for its transaction wakes the card when it has waited
    ``label_park_seconds``; the card also wakes every ``IDLE_CHECK_SECONDS`` and leaves
    the state (and the recovery store) once nothing of it can matter any more, as of the
    latest event time this worker has seen (``card_idle``).
    """

    def __init__(
        self,
        config: ScoringSettings,
        metrics: DetectorMetrics,
        watermark: Watermark,
        snapshot: Snapshot | None,
    ) -> None:
        self.config = config
        self.watermark = watermark
        self.state = thaw(snapshot, CardState) if snapshot is not None else None
        self.sizes = metrics.state.worker()
        if self.state is not None:
            self.sizes.cards += 1
            self.sizes.parked += len(self.state.parked)

    def on_item(self, value: Stamped[Event]) -> tuple[list[Stamped[CardOut]], bool]:
        event, received, seq, origin = value
        if self.state is None:
            self.sizes.cards += 1
            parked = 0
        else:
            parked = len(self.state.parked)
        if isinstance(event, Transaction):
            self.watermark.advance(event.epoch_seconds)
        try:
            self.state, out = card_step(
                self.state, event, self.config, origin=origin, received=received
            )
        except Exception as error:
            out = [step_rejection("card_state", error, event, origin)]
        if self.state is not None:
            self.sizes.parked += len(self.state.parked) - parked
        return [(o, received, seq, None) for o in out], StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if self.state is None:
            return None
        check = time.time() + IDLE_CHECK_SECONDS
        until = parked_until(self.state, self.config)
        return datetime.fromtimestamp(min(check, until or check), UTC)

    def on_notify(self) -> tuple[list[Stamped[CardOut]], bool]:
        if self.state is None:
            return [], StatefulLogic.RETAIN
        before = len(self.state.parked)
        expired = expire_parked(self.state, time.time(), self.config)
        self.sizes.parked -= before - len(self.state.parked)
        out: list[Stamped[CardOut]] = [(r, time.time(), 0, None) for r in expired]
        if self.state.empty or card_idle(self.state, self.watermark.event_time, self.config):
            self.sizes.cards -= 1
            return out, StatefulLogic.DISCARD
        return out, StatefulLogic.RETAIN

    def snapshot(self) -> Snapshot:
        assert self.state is not None
        return freeze(self.state)


class TerminalLogic(StatefulBatchLogic[Stamped[TerminalIn], Stamped[TerminalOut], Snapshot]):
    """``terminal_step`` for one terminal, in the order the records were read (the card
    step hands on its batch grouped by card); counts terminals and kept features, and
    measures the delay of the labels it passes on to learn.

    Every ``IDLE_CHECK_SECONDS`` it also presumes legitimate what has waited long enough
    as of the latest event time this worker has seen, so that a terminal gone quiet does
    too, and leaves the state once nothing of it can matter (``terminal_idle``).
    """

    def __init__(
        self,
        config: ScoringSettings,
        metrics: DetectorMetrics,
        watermark: Watermark,
        snapshot: Snapshot | None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.watermark = watermark
        self.state = thaw(snapshot, TerminalState) if snapshot is not None else None
        self.sizes = metrics.state.worker()
        if self.state is not None:
            self.sizes.terminals += 1
            self.sizes.pending += _in_memory(self.state.pending)

    def on_batch(
        self, values: list[Stamped[TerminalIn]]
    ) -> tuple[list[Stamped[TerminalOut]], bool]:
        out: list[Stamped[TerminalOut]] = []
        for value in in_arrival_order(values):
            out.extend(self._one(value))
        return out, StatefulBatchLogic.RETAIN

    def _one(self, value: Stamped[TerminalIn]) -> list[Stamped[TerminalOut]]:
        item, received, seq, origin = value
        if not isinstance(item, RoutedLabel):
            self.watermark.advance(item.transaction.epoch_seconds)
        if self.state is None:
            self.sizes.terminals += 1
            before = 0
        else:
            before = _in_memory(self.state.pending)
        try:
            self.state, out = terminal_step(self.state, item, self.config)
        except Exception as error:
            out = [step_rejection("terminal_state", error, item, origin)]
        if self.state is not None:
            self.sizes.pending += _in_memory(self.state.pending) - before
        if isinstance(item, RoutedLabel) and out and isinstance(out[0], LabelToLearn):
            label = item.label
            delay = label.labeled_at.timestamp() - item.transaction_time
            self.metrics.label_delay_observed(label.source, delay)
        return [(o, received, seq, None) for o in out]

    def notify_at(self) -> datetime:
        return datetime.fromtimestamp(time.time() + IDLE_CHECK_SECONDS, UTC)

    def on_notify(self) -> tuple[list[Stamped[TerminalOut]], bool]:
        if self.state is None:
            return [], StatefulBatchLogic.RETAIN
        now = self.watermark.event_time
        pending = self.state.pending
        if isinstance(pending, StoredPending):
            _purge_waiting(pending, now)
        before = _in_memory(pending)
        presumed: list[Stamped[TerminalOut]] = [
            (LabelToLearn(tx_id, False, "presumed", x), time.time(), 0, None)
            for tx_id, x in pending.expire(now)
        ]
        self.sizes.pending += _in_memory(pending) - before
        if terminal_idle(self.state, now, self.config):
            self.sizes.terminals -= 1
            self.sizes.pending -= _in_memory(pending)
            return presumed, StatefulBatchLogic.DISCARD
        return presumed, StatefulBatchLogic.RETAIN

    def snapshot(self) -> Snapshot | None:  # type: ignore[override]
        if self.state is None:  # its first item failed before it had any state
            return None
        pending = self.state.pending
        if isinstance(pending, StoredPending):
            pending.store.commit()  # the rows this snapshot refers to are on disk first
        return freeze(self.state)


@dataclass
class _ModelSnapshot:
    """A model shard's state, its index, and when it was taken (wall clock, seconds)."""

    state: ModelState
    shard: int
    taken_at: float


class ModelLogic(StatefulBatchLogic[ShardIn, ModelItem, Snapshot]):
    """One shard of the model step, plus a summary of its models every ``interval``
    seconds, at the end, and at once after a control message is applied (so that the
    change shows); ``StatusLogic`` merges the shards' summaries into the models' status.

    Each batch is handled in the order its records were read (see ``in_arrival_order``).
    Built on resume, it first reads back the decisions published since its snapshot
    (``read_back``): a transaction scored again gets the decision it was published with.
    """

    def __init__(
        self,
        config: ScoringSettings,
        interval: float,
        read_back: Callable[[float | None], Published],
        snapshot: Snapshot | None,
    ) -> None:
        self.config = config
        self.interval = timedelta(seconds=interval)
        self.shard: int | None = None  # known from the snapshot, or the first item
        if snapshot is not None:
            restored = thaw(snapshot, _ModelSnapshot)
            self.state = ensure_models(restored.state, config)
            self.shard = restored.shard
            self.published = self._own(read_back(restored.taken_at))
        else:
            self.state = new_model_state(config)
            self.published = read_back(None)
        self.next_status = datetime.now(UTC)

    def on_batch(self, values: list[ShardIn]) -> tuple[list[ModelItem], bool]:
        if self.shard is None:
            self.shard = values[0][0]
            log.info("model shard started", shard=self.shard, of=self.config.shards)
            self.published = self._own(self.published)
        out: list[ModelItem] = []
        for value in in_arrival_order([value for _, value in values]):
            out.extend(self._one(value))
        return out, StatefulBatchLogic.RETAIN

    def _own(self, published: Published) -> Published:
        """Of the decisions published, those of this shard's transactions."""
        shards, mine = self.config.shards, self.shard
        if shards == 1 or not published:
            return published
        return {k: v for k, v in published.items() if shard_of(k[1], shards) == mine}

    def _one(self, value: Stamped[ModelIn]) -> list[ModelItem]:
        item, received, seq, origin = value
        try:
            self.state, out = model_step(
                self.state, item, self.config, origin=origin, watch=self.shard == 0
            )
        except Exception as error:
            out = [step_rejection("model", error, item, origin)]
        if self.published:
            out = [self._of_record(o) for o in out]
        stamped: list[ModelItem] = [(o, received, seq, None) for o in out]
        if isinstance(item, Control) and any(isinstance(o, ControlApplied) for o in out):
            return [*stamped, *self._status()[0]]
        return stamped

    def _of_record(self, out: ModelOut) -> ModelOut:
        if not isinstance(out, Scored):
            return out
        tx = out.transaction
        record = self.published.pop((tx.card_id, tx.transaction_id), None)
        return out.of_record(record) if record is not None else out

    def _status(self) -> tuple[list[ModelItem], bool]:
        self.next_status = datetime.now(UTC) + self.interval
        try:
            summary = summarize(self.state, self.shard or 0)
        except Exception as error:  # a status is not worth stopping the flow for
            step_error("model_status", error)
            return [], StatefulBatchLogic.RETAIN
        return [(summary, time.time(), 0, None)], StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[ModelItem], bool]:
        return self._status()

    def on_eof(self) -> tuple[list[ModelItem], bool]:
        return self._status()

    def notify_at(self) -> datetime:
        return self.next_status

    def snapshot(self) -> Snapshot:
        if self.config.waiting_store is not None:  # the scores it refers to are on disk first
            waiting_store(self.config.waiting_store, self.config.waiting_cache_mb).commit()
        return freeze(_ModelSnapshot(self.state, self.shard or 0, time.time()))


class StatusLogic(StatefulBatchLogic[ShardSummary, Stamped[ModelStatus], None]):
    """The models' status over every shard: each shard's latest summary, merged."""

    def __init__(self, _: None) -> None:
        self.latest: dict[int, ShardSummary] = {}

    def on_batch(self, values: list[ShardSummary]) -> tuple[list[Stamped[ModelStatus]], bool]:
        for summary in values:
            self.latest[summary.shard] = summary
        try:
            statuses = merge_statuses([self.latest[k] for k in sorted(self.latest)])
        except Exception as error:  # a status is not worth stopping the flow for
            step_error("model_status", error)
            return [], StatefulBatchLogic.RETAIN
        now = time.time()
        return [(status, now, 0, None) for status in statuses], StatefulBatchLogic.RETAIN

    def snapshot(self) -> None:
        return None  # every shard sends its summary again within an interval


def _in_memory(pending: object) -> int:
    """Waiting features held in keyed state (those on disk are counted by their store)."""
    return len(pending) if isinstance(pending, PendingFeatures) else 0


class Watermark:
    """The latest transaction time (event time) each worker thread of a flow has seen.

    Kept by thread id: Bytewax's workers are threads Python did not start, whose
    ``threading.local`` values do not last from one call into Python to the next.
    """

    def __init__(self) -> None:
        self._by_thread: dict[int, float] = {}

    @property
    def event_time(self) -> float:
        return self._by_thread.get(threading.get_ident(), float("-inf"))

    def advance(self, event_time: float) -> None:
        thread = threading.get_ident()
        if event_time > self._by_thread.get(thread, float("-inf")):
            self._by_thread[thread] = event_time


# When each store was last purged: (wall clock, event-time cutoff)
_last_purge: dict[Path, tuple[float, float]] = {}


def _purge_waiting(pending: StoredPending, now: float) -> None:
    """Delete the waiting features past the label horizon (and a margin), now and then:
    every ``IDLE_CHECK_SECONDS``, or once event time moved a day (a replay)."""
    if now == float("-inf"):
        return
    path = pending.store_path
    cutoff = now - pending.horizon_days * 86400.0 - PURGE_MARGIN_SECONDS
    wall, last = _last_purge.get(path, (float("-inf"), float("-inf")))
    if time.time() - wall < IDLE_CHECK_SECONDS and cutoff - last < 86400.0:
        return
    _last_purge[path] = (time.time(), cutoff)
    gone = pending.store.purge_before(cutoff)
    if gone:
        log.info("waiting features purged", rows=gone, rows_left=pending.store.rows)
