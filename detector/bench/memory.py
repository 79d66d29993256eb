"""``fraudstream bench --memory``: months of the Handbook through one detector process.

The detector (production settings, its own recovery folder and topics) reads the
dataset's transactions and, ``chargeback_delay_days`` after each fraud, its chargeback,
as ``fraudstream replay`` publishes them. Every ``interval_days`` of event time the
benchmark measures the process from outside only, so that it keeps working whatever
the state looks like inside:

- RSS (``/proc/<pid>/status``) and its growth over the RSS of the idle detector;
- the recovery folder's size on disk, and how much of it is the waiting features' file
  (``waiting-*.db``, its journal included) rather than Bytewax's snapshots;
- the detector's own state gauges at ``/metrics``: ``fraudstream_state_cards``,
  ``fraudstream_state_terminals``, ``fraudstream_state_pending_labels`` (scored
  transactions waiting for a label) and ``fraudstream_state_parked_labels``;
- the bytes of the latest snapshot of each card and terminal, read from the recovery
  partitions (read only).

Bytes per card and per terminal are their snapshots' mean size; bytes per waiting label
are the waiting features' file divided by the waiting labels. Between two samples, the
RSS growth divided by the change in waiting labels is the marginal cost in RAM of one
more waiting label while the other counts stay put.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import structlog

from detector.bench.infra import (
    BOOTSTRAP_ENV,
    BenchError,
    Topics,
    Watermarks,
    broker_for,
    work_dir,
)
from detector.bench.procs import Child, detector_args, dir_bytes, settings_env
from detector.local.broker_config import find_free_ports
from detector.replay.datasets import Record, read_dataset
from detector.replay.progress import ProgressBar
from detector.replay.publishing import PublishStats, publish
from detector.settings import Settings

log = structlog.get_logger("fraudstream.bench")

DAY = 86400.0
STATE_GAUGES = (
    "fraudstream_state_cards",
    "fraudstream_state_terminals",
    "fraudstream_state_pending_labels",
    "fraudstream_state_parked_labels",
)
MARGINAL_MIN_LABELS = 1000
MARGINAL_MIN_SHARE = 0.05
_GAUGE = re.compile(r"^(fraudstream_state_[a-z_]+) ([0-9.eE+-]+)$", re.MULTILINE)


@dataclass
class MemoryOptions:
    dataset: Path
    days: float | None = None
    """Event-time days to replay from the first transaction; None: the whole file."""
    interval_days: float = 10.0
    partitions: int = 4
    chargeback_delay_days: float = 7.0
    stall_seconds: float = 180.0
    bootstrap: str | None = None


@dataclass
class MemorySample:
    day: float
    decided: int
    rss_kib: int
    growth_kib: int
    store_bytes: int
    waiting_bytes: int
    gauges: dict[str, int]
    snapshots: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Bytewax step id -> (keys, bytes) of the latest snapshot of each key."""

    def snapshot_bytes_per_key(self, step: str) -> float | None:
        keys, size = next((v for k, v in self.snapshots.items() if k.split(".")[1] == step), (0, 0))
        return size / keys if keys else None

    @property
    def cards(self) -> int:
        return self.gauges.get("fraudstream_state_cards", 0)

    @property
    def terminals(self) -> int:
        return self.gauges.get("fraudstream_state_terminals", 0)

    @property
    def pending(self) -> int:
        return self.gauges.get("fraudstream_state_pending_labels", 0)


@dataclass
class MemoryReport:
    baseline_kib: int
    samples: list[MemorySample] = field(default_factory=list)
    peak_kib: int = 0
    transactions: int = 0
    labels: int = 0
    seconds: float = 0.0


class _Timeline:
    """Passes records through while noting the index where each sampling day begins."""

    def __init__(self, records: Iterator[Record], days: float | None, interval: float) -> None:
        self._records = records
        self._days = days
        self._interval = interval
        self.boundaries: list[tuple[float, int]] = []
        """(event-time day, transactions before it), in order."""
        self.last_day = 0.0

    def __iter__(self) -> Iterator[Record]:
        start: float | None = None
        next_day = self._interval
        for index, record in enumerate(self._records):
            ts = record.transaction.timestamp.timestamp()
            if start is None:
                start = ts - ts % DAY  # midnight UTC of the first day
            day = (ts - start) / DAY
            if self._days is not None and day >= self._days:
                return
            while day >= next_day:
                self.boundaries.append((next_day, index))
                next_day += self._interval
            self.last_day = day
            yield record


def scrape(url: str) -> dict[str, int]:
    """The state gauges of a detector's /metrics."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {name: int(float(value)) for name, value in _GAUGE.findall(text)}


@contextlib.contextmanager
def _copy_of(part: Path) -> Iterator[sqlite3.Connection]:
    """A connection to a copy of a recovery partition (its file and write-ahead log).

    Never a connection to the detector's own file: another process's connection to a
    WAL database shares its memory-mapped index (``-shm``), and a reader that ends up
    alone with it resets that index under the detector's feet (SIGBUS). A copy torn by a
    concurrent write only loses the log's last frames, which SQLite checks and drops.
    """
    with tempfile.TemporaryDirectory(prefix="fraudstream-recovery-") as folder:
        copy = Path(folder) / part.name
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                shutil.copyfile(f"{part}{suffix}", f"{copy}{suffix}")
        with contextlib.closing(sqlite3.connect(copy)) as db:
            yield db


def committed_epoch(recovery: Path) -> int:
    """The latest epoch whose snapshots every recovery partition has committed."""
    epochs = []
    for part in recovery.glob("part-*.sqlite3"):
        with _copy_of(part) as db:
            epochs.append(db.execute("SELECT MAX(commit_epoch) FROM commits").fetchone()[0] or 0)
    return min(epochs, default=0)


def _wait_for_epochs(child: Child, recovery: Path, epochs: int, timeout: float) -> None:
    start = committed_epoch(recovery)
    deadline = time.monotonic() + timeout
    while (now := committed_epoch(recovery)) < start + epochs:
        if (dead := child.died()) is not None:
            raise BenchError(dead)
        if time.monotonic() > deadline:
            raise BenchError(
                f"memory run: {now - start} of {epochs} snapshots committed in {timeout:g} s "
                f"(epoch {now}); the detector's log ends:\n{child.log_tail()}"
            )
        time.sleep(0.2)


def snapshot_sizes(recovery: Path) -> dict[str, tuple[int, int]]:
    """Keys and bytes of the latest snapshot of each key, by step, in the recovery
    partitions (copies of them, beside the running detector)."""
    out: dict[str, tuple[int, int]] = {}
    for part in recovery.glob("part-*.sqlite3"):
        with _copy_of(part) as db:
            rows = db.execute(
                "SELECT step_id, COUNT(*), SUM(LENGTH(ser_change)) FROM snaps AS s "
                "WHERE ser_change IS NOT NULL AND snap_epoch = (SELECT MAX(snap_epoch) "
                "FROM snaps WHERE step_id = s.step_id AND state_key = s.state_key) "
                "GROUP BY step_id"
            ).fetchall()
        for step, keys, size in rows:
            before = out.get(step, (0, 0))
            out[step] = (before[0] + keys, before[1] + size)
    return out


def run_memory(
    settings: Settings,
    options: MemoryOptions,
    on_sample: Callable[[MemorySample, MemorySample | None], None] = lambda *_: None,
) -> MemoryReport:
    """Replay the dataset through one detector process; a sample every ``interval_days``."""
    external = bool(options.bootstrap or os.environ.get(BOOTSTRAP_ENV))
    with work_dir() as work, broker_for(settings, options.bootstrap, work) as settings:
        topics = Topics(settings, options.partitions)
        try:
            return _run(topics.system("memory"), options, work, on_sample)
        finally:
            if external:
                topics.delete()


def _run(
    settings: Settings,
    options: MemoryOptions,
    work: Path,
    on_sample: Callable[[MemorySample, MemorySample | None], None],
) -> MemoryReport:
    [port] = find_free_ports(1)
    url = f"http://127.0.0.1:{port}/metrics"
    recovery = work / "memory" / "recovery"
    recovery.parent.mkdir(parents=True)
    env = {
        **settings_env(settings),
        "FRAUDSTREAM_METRICS_HOST": "127.0.0.1",
        "FRAUDSTREAM_METRICS_PORT": str(port),
        "FRAUDSTREAM_RECOVERY_DIR": str(recovery),
    }
    child = Child("detector", detector_args(), env, recovery.parent / "detector.log")
    try:
        _wait_for_metrics(child, url, options.stall_seconds)
        time.sleep(2.0)  # let the start-up settle: the baseline is the idle detector
        report = MemoryReport(baseline_kib=child.rss_kib())
        timeline = _Timeline(read_dataset(options.dataset), options.days, options.interval_days)
        published: list[PublishStats | BaseException] = []
        publisher = threading.Thread(
            target=_publish,
            args=(timeline, settings, options.chargeback_delay_days, published),
            daemon=True,
        )
        started = time.monotonic()
        publisher.start()
        marks = Watermarks(settings, settings.kafka.topic_decisions)

        def sample(day: float, decided: int) -> None:
            rss = child.rss_kib()
            point = MemorySample(
                day=day,
                decided=decided,
                rss_kib=rss,
                growth_kib=rss - report.baseline_kib,
                store_bytes=dir_bytes(recovery),
                waiting_bytes=dir_bytes(recovery, "waiting-*"),
                gauges=scrape(url),
                snapshots=snapshot_sizes(recovery),
            )
            previous = report.samples[-1] if report.samples else None
            report.samples.append(point)
            on_sample(point, previous)

        try:
            seen = 0
            last_progress = time.monotonic()
            with ProgressBar("memory run: decided") as tick:
                while True:
                    if (dead := child.died()) is not None:
                        raise BenchError(dead)
                    decided = marks.total()
                    for _ in range(decided - seen):
                        tick()
                    if decided > seen:
                        seen, last_progress = decided, time.monotonic()
                    elif time.monotonic() - last_progress > options.stall_seconds:
                        raise BenchError(f"memory run: no decision for {options.stall_seconds} s")
                    boundaries = list(timeline.boundaries)
                    while len(report.samples) < len(boundaries):
                        day, index = boundaries[len(report.samples)]
                        if decided < index:
                            break
                        sample(day, decided)
                    if published:
                        outcome = published[0]
                        if isinstance(outcome, BaseException):
                            raise BenchError(f"publishing failed: {outcome}") from outcome
                        if decided >= outcome.transactions:
                            report.transactions = outcome.transactions
                            report.labels = outcome.labels
                            break
                    time.sleep(1.0)
            report.seconds = time.monotonic() - started
            # The last sample once the state after the last decision is in a snapshot.
            _wait_for_epochs(child, recovery, 2, options.stall_seconds)
            sample(timeline.last_day, seen)
        finally:
            marks.close()
    finally:
        child.stop()
    report.peak_kib = child.peak_kib
    return report


def _publish(
    records: _Timeline,
    settings: Settings,
    chargeback_delay_days: float,
    out: list[PublishStats | BaseException],
) -> None:
    try:
        delay = timedelta(days=chargeback_delay_days) if chargeback_delay_days else None
        out.append(publish(iter(records), settings, chargeback_delay=delay))
    except BaseException as error:  # reported by the monitoring loop
        out.append(error)


def _wait_for_metrics(child: Child, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (dead := child.died()) is not None:
            raise BenchError(dead)
        try:
            scrape(url)
            return
        except OSError:
            time.sleep(0.3)
    raise BenchError(f"the detector's metrics at {url} did not answer in {timeout:g} s")


# --- the report ------------------------------------------------------------------------

HEADER = (
    "day",
    "decided",
    "RSS MiB",
    "growth MiB",
    "store MiB",
    "of it waiting",
    "cards",
    "terminals",
    "waiting labels",
    "snapshot B/card",
    "B/terminal",
    "disk B/waiting label",
    "RSS B/label",
)
WIDTHS = (5, 10, 8, 10, 9, 13, 6, 9, 14, 15, 10, 20, 11)


def _row(cells: tuple[str, ...]) -> str:
    return " | ".join(c.rjust(w) for c, w in zip(cells, WIDTHS, strict=True))


def format_header() -> str:
    return _row(HEADER) + "\n" + "-+-".join("-" * w for w in WIDTHS)


def format_sample(sample: MemorySample, previous: MemorySample | None) -> str:
    def per(amount: float | None, count: int = 1) -> str:
        return f"{amount / count:,.0f}" if amount is not None and count > 0 else "-"

    marginal = None
    # Only while the waiting labels grow clearly: else noise in RSS dominates.
    if previous is not None and sample.pending - previous.pending >= max(
        MARGINAL_MIN_LABELS, previous.pending * MARGINAL_MIN_SHARE
    ):
        marginal = (sample.rss_kib - previous.rss_kib) * 1024 / (sample.pending - previous.pending)
    return _row(
        (
            f"{sample.day:.0f}",
            f"{sample.decided:,}",
            f"{sample.rss_kib / 1024:,.0f}",
            f"{sample.growth_kib / 1024:,.0f}",
            f"{sample.store_bytes / 2**20:,.1f}",
            f"{sample.waiting_bytes / 2**20:,.1f}",
            f"{sample.cards:,}",
            f"{sample.terminals:,}",
            f"{sample.pending:,}",
            per(sample.snapshot_bytes_per_key("card_state")),
            per(sample.snapshot_bytes_per_key("terminal_state")),
            per(sample.waiting_bytes, sample.pending),
            per(marginal),
        )
    )


def format_summary(report: MemoryReport) -> str:
    return (
        f"{report.transactions:,} transactions and {report.labels:,} chargebacks in "
        f"{report.seconds:,.0f} s; idle detector {report.baseline_kib / 1024:,.0f} MiB, "
        f"peak RSS {report.peak_kib / 1024:,.0f} MiB"
    )
