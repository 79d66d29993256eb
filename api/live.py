"""The live queue: changes announced to the page's open event streams (``GET /api/events``).

A ``Hub`` per app fans each change out to its subscribers, one bounded asyncio queue each.
A subscriber that does not keep up loses its pending events and gets one ``resync``
instead (it reloads what it shows); it never slows the others down.

Changes reach the hubs two ways:

- ``publish`` (safe from any thread) right after a commit in this process: the bridge
  after storing an alert, a model status or a detector event, the routes after a verdict
  or an admin change;
- the ``Follower``, one task per app, which reads a cheap change cursor from the database
  about once a second (the newest audit event, control event, model status and detector
  event) and
  publishes what it finds. Several API replicas share one database but each consumes only
  its own partitions and serves only its own requests: the follower makes every replica's
  subscribers hear every change.

A change heard both ways is sent once: each event carries a key (an alert's id and
version, a control's id, a model status's time, a detector event's id and emission time)
and the hub remembers recent keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar, cast

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.schemas import AlertItem, ControlAccepted, VerdictsOut
from api.tables import (
    AlertEventRecord,
    AlertRecord,
    ControlEventRecord,
    DetectorEventRecord,
    ModelStatusRecord,
)
from detector.contracts import Alert, DetectorEvent, ModelStatus

log = structlog.get_logger("fraudstream.api")

EventKind = Literal["alert", "models", "control", "detector_event", "resync"]
# Events a subscriber may have pending; past that it gets a resync instead.
QUEUE_SIZE = 256
# Keys of recently sent events: a change heard from both publish and the follower.
REMEMBERED_KEYS = 4096
FOLLOW_INTERVAL_SECONDS = 1.0
FOLLOW_BATCH = 500
# Model status rows are found by their time of arrival, written by each replica's clock:
# look back this far, the keys drop what was sent already.
STATUS_OVERLAP = timedelta(seconds=5)

Route = TypeVar("Route", bound=Callable[..., Any])


@dataclass(frozen=True)
class LiveEvent:
    """One change: its kind (the SSE event name), its data (JSON) and its key (deduplication)."""

    kind: EventKind
    data: dict[str, Any]
    key: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Delivered:
    """An event as a subscriber receives it, with its id in this hub's stream."""

    id: str
    kind: EventKind
    data: dict[str, Any]


def alert_event(alert_id: str, card_id: str, status: str, version: int, change: str) -> LiveEvent:
    """An alert was received (``change="received"``), claimed, released, decided or reopened."""
    data = {
        "alert_id": alert_id,
        "card_id": card_id,
        "status": status,
        "version": version,
        "change": change,
    }
    return LiveEvent("alert", data, ("alert", alert_id, str(version)))


def models_event(model_name: str, emitted_at: datetime) -> LiveEvent:
    """A model status arrived."""
    at = emitted_at.astimezone(UTC).isoformat()
    return LiveEvent("models", {"model_name": model_name}, ("models", model_name, at))


def control_event(control_id: str, action: str) -> LiveEvent:
    """An admin changed thresholds, the deciding model, the mode, a rule or a list."""
    data = {"control_id": control_id, "action": action}
    return LiveEvent("control", data, ("control", control_id))


def detector_event(event_id: str, kind: str, subject: str, emitted_at: datetime) -> LiveEvent:
    """The detector noticed an attack or a drift (or more of one it had noticed)."""
    data = {"event_id": event_id, "kind": kind, "subject": subject}
    at = emitted_at.astimezone(UTC).isoformat()
    return LiveEvent("detector_event", data, ("detector_event", event_id, at))


class Subscription:
    """One open stream's queue; ``lost`` once events were dropped for it."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[Delivered] = asyncio.Queue(maxsize=size)
        self.lost = 0

    async def next(self) -> Delivered:
        return await self.queue.get()

    def offer(self, event: Delivered, resync: Callable[[], Delivered]) -> None:
        """Queue ``event``; when full, drop what is pending and queue a resync instead."""
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lost += self.queue.qsize() + 1
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(resync())


class Hub:
    """The subscribers of one app and the events sent to them; ``start`` in its lifespan."""

    def __init__(self, *, queue_size: int = QUEUE_SIZE, remember: int = REMEMBERED_KEYS) -> None:
        self.queue_size = queue_size
        self.remember = remember
        # Event ids are "<stream>-<n>": a browser reconnecting with the id of another
        # process (or of this one before a restart) is told to resync.
        self.stream = secrets.token_hex(4)
        self._sequence = 0
        self._subscribers: set[Subscription] = set()
        self._seen: OrderedDict[tuple[str, ...], None] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Bind to the running loop and hear ``publish`` (from the lifespan)."""
        self._loop = asyncio.get_running_loop()
        with _HUBS_LOCK:
            _HUBS.add(self)

    def stop(self) -> None:
        with _HUBS_LOCK:
            _HUBS.discard(self)
        self._loop = None

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def last_id(self) -> str:
        return f"{self.stream}-{self._sequence}"

    def _next(self, kind: EventKind, data: dict[str, Any]) -> Delivered:
        self._sequence += 1
        return Delivered(self.last_id, kind, data)

    def resync(self) -> Delivered:
        """An event telling a subscriber to reload everything it shows."""
        return self._next("resync", {})

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """A new subscription for as long as the ``with`` block runs (in the loop)."""
        subscription = Subscription(self.queue_size)
        self._subscribers.add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)

    def publish(self, event: LiveEvent) -> None:
        """Send ``event`` to every subscriber; safe from any thread, never blocks."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.deliver(event)
            return
        with contextlib.suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(self.deliver, event)

    def deliver(self, event: LiveEvent) -> bool:
        """Queue ``event`` for every subscriber (in the loop); False if sent before."""
        if event.key is not None:
            with self._lock:
                if event.key in self._seen:
                    self._seen.move_to_end(event.key)
                    return False
                self._seen[event.key] = None
                while len(self._seen) > self.remember:
                    self._seen.popitem(last=False)
        if not self._subscribers:
            return True
        delivered = self._next(event.kind, event.data)
        for subscription in list(self._subscribers):
            subscription.offer(delivered, self.resync)
        return True


_HUBS: set[Hub] = set()
_HUBS_LOCK = threading.Lock()


def publish(*events: LiveEvent) -> None:
    """Announce ``events`` to the open streams of this process (any thread, after commit)."""
    with _HUBS_LOCK:
        hubs = list(_HUBS)
    for hub in hubs:
        for event in events:
            hub.publish(event)


# --- one-line call sites -------------------------------------------------------------


def _announce(result: object, change: str) -> None:
    if isinstance(result, AlertItem):
        publish(alert_event(result.alert_id, result.card_id, result.status, result.version, change))
    elif isinstance(result, VerdictsOut):
        publish(
            *(
                alert_event(r.alert_id, r.alert.card_id, r.alert.status, r.alert.version, change)
                for r in result.results
                if r.ok and r.alert is not None
            )
        )
    elif isinstance(result, ControlAccepted):
        publish(control_event(result.control_id, result.action))


def announces(change: str) -> Callable[[Route], Route]:
    """A route decorator (below the router's): announce what the route changed once it
    returned (an alert, a batch of verdicts or an admin's change), after its commit."""

    def decorate(route: Route) -> Route:
        @functools.wraps(route)
        def announcing(*args: Any, **kwargs: Any) -> Any:
            result = route(*args, **kwargs)
            _announce(result, change)
            return result

        return cast(Route, announcing)

    return decorate


def alert_received(alert: Alert) -> None:
    """Announce an alert the bridge stored."""
    publish(alert_event(alert.alert_id, alert.transaction.card_id, "open", 1, "received"))


def status_received(status: ModelStatus) -> None:
    """Announce a model status the bridge stored."""
    publish(models_event(status.model_name, status.emitted_at))


def detector_event_received(event: DetectorEvent) -> None:
    """Announce a detector event the bridge stored."""
    publish(detector_event(event.event_id, event.kind, event.subject, event.emitted_at))


# --- the database follower ------------------------------------------------------------


@dataclass
class Cursor:
    """How far the follower has read: the newest audit and control ids, status and
    detector event times."""

    alert_event_id: int = 0
    control_event_id: int = 0
    status_received_at: datetime | None = None
    changes: list[LiveEvent] = field(default_factory=list)
    detector_event_received_at: datetime | None = None


def read_cursor(session: Session) -> Cursor:
    """Where the database is now: changes before this are not announced."""
    return Cursor(
        alert_event_id=session.scalar(select(func.max(AlertEventRecord.id))) or 0,
        control_event_id=session.scalar(select(func.max(ControlEventRecord.id))) or 0,
        status_received_at=session.scalar(select(func.max(ModelStatusRecord.received_at))),
        detector_event_received_at=session.scalar(
            select(func.max(DetectorEventRecord.received_at))
        ),
    )


def read_changes(session: Session, cursor: Cursor) -> Cursor:
    """The changes after ``cursor`` (in ``changes``) and the cursor past them.

    Each query reads an index range that is empty most of the time (primary keys; the
    model status table has a row per model).
    """
    changes: list[LiveEvent] = []
    alert_rows = session.execute(
        select(
            AlertEventRecord.id,
            AlertEventRecord.action,
            AlertRecord.alert_id,
            AlertRecord.card_id,
            AlertRecord.status,
            AlertRecord.version,
        )
        .join(AlertRecord, AlertRecord.alert_id == AlertEventRecord.alert_id)
        .where(AlertEventRecord.id > cursor.alert_event_id)
        .order_by(AlertEventRecord.id)
        .limit(FOLLOW_BATCH)
    ).all()
    alert_event_id = cursor.alert_event_id
    for row in alert_rows:
        alert_event_id = row.id
        changes.append(alert_event(row.alert_id, row.card_id, row.status, row.version, row.action))
    control_rows = session.execute(
        select(ControlEventRecord.id, ControlEventRecord.control_id, ControlEventRecord.action)
        .where(ControlEventRecord.id > cursor.control_event_id)
        .order_by(ControlEventRecord.id)
        .limit(FOLLOW_BATCH)
    ).all()
    control_event_id = cursor.control_event_id
    for control_row in control_rows:
        control_event_id = control_row.id
        changes.append(control_event(control_row.control_id, control_row.action))
    status_query = select(
        ModelStatusRecord.model_name, ModelStatusRecord.emitted_at, ModelStatusRecord.received_at
    )
    if cursor.status_received_at is not None:
        since = cursor.status_received_at - STATUS_OVERLAP
        status_query = status_query.where(ModelStatusRecord.received_at > since)
    status_received_at = cursor.status_received_at
    for status_row in session.execute(status_query).all():
        changes.append(models_event(status_row.model_name, status_row.emitted_at))
        if status_received_at is None or status_row.received_at > status_received_at:
            status_received_at = status_row.received_at
    # Detector events are found by their time of arrival too (a replaced one arrives again);
    # they are few, so like statuses every row of the overlap is read.
    event_query = select(
        DetectorEventRecord.event_id,
        DetectorEventRecord.kind,
        DetectorEventRecord.subject,
        DetectorEventRecord.payload,
        DetectorEventRecord.received_at,
    )
    events_received_at = cursor.detector_event_received_at
    if events_received_at is not None:
        since = events_received_at - STATUS_OVERLAP
        event_query = event_query.where(DetectorEventRecord.received_at > since)
    event_query = event_query.order_by(DetectorEventRecord.received_at)
    for event_row in session.execute(event_query).all():
        emitted_at = datetime.fromisoformat(str(event_row.payload.get("emitted_at")))
        changes.append(
            detector_event(event_row.event_id, event_row.kind, event_row.subject, emitted_at)
        )
        if events_received_at is None or event_row.received_at > events_received_at:
            events_received_at = event_row.received_at
    return Cursor(alert_event_id, control_event_id, status_received_at, changes, events_received_at)


class Follower:
    """Reads the database's changes about once a second while anyone listens; one per app."""

    def __init__(
        self,
        hub: Hub,
        session_maker: Callable[[], Session],
        *,
        interval: float = FOLLOW_INTERVAL_SECONDS,
    ) -> None:
        self.hub = hub
        self.sessions = session_maker
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._cursor: Cursor | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._follow_forever(), name="fraudstream-api-live")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._task = None

    def poll(self) -> list[LiveEvent]:
        """One look at the database (in a worker thread): the changes since the last look.

        The first look only places the cursor: a new subscriber loads the page afresh.
        """
        with self.sessions() as session:
            if self._cursor is None:
                self._cursor = read_cursor(session)
                return []
            self._cursor = read_changes(session, self._cursor)
            return self._cursor.changes

    async def _follow_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self.hub.subscribers:
                self._cursor = None  # nobody listens: start afresh with the next one
                continue
            try:
                changes = await asyncio.to_thread(self.poll)
            except Exception as error:  # the database, most likely; try again next time
                log.warning("live changes unavailable", error=f"{type(error).__name__}"[:200])
                continue
            for event in changes:
                self.hub.deliver(event)
