"""The recovery store (Bytewax snapshots), its age, and the waiting features beside it."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import structlog
from bytewax.recovery import RecoveryConfig, init_db_dir

from detector import __version__
from detector.kafka_config import consumer_config
from detector.published import Published, read_published
from detector.settings import Settings

log = structlog.get_logger(__name__)


class ReadBack:
    """Reads the decisions published since a snapshot was taken (or, without one, since
    the recovery store was made): what a resumed model step must publish again as is."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Bytewax takes a key's snapshot when its epoch closes, before it lets the key
        # see the next epoch's items, so every decision to publish again was published
        # after the snapshot was taken; the margin covers clocks, and costs only a few
        # more decisions to read.
        self.margin = 2 * settings.detector.snapshot_interval_seconds + 30.0

    def __call__(self, taken_at: float | None) -> Published:
        settings = self.settings
        since = taken_at - self.margin if taken_at is not None else store_created_at(settings)
        if since is None:
            return {}
        published = read_published(consumer_config(settings), settings.kafka.topic_decisions, since)
        log.info("resuming with decisions of record", decisions=len(published), since=since)
        return published


def recovery_config(settings: Settings) -> RecoveryConfig | None:
    """Recovery is on by default: create the snapshot store on first use.

    A cluster of N processes needs N partitions, each held exactly once by the cluster
    as a whole: process i creates partition i of N in its recovery folder if it is not
    there. That works both with a folder per process (pods with volumes of their own)
    and with one folder shared by the processes of a host.
    """
    if not settings.detector.recovery:
        return None
    path = settings.recovery_path
    path.mkdir(parents=True, exist_ok=True)
    processes = max(len(settings.detector.cluster), 1)
    if processes == 1:
        if not any(path.glob("part-*.sqlite3")):
            init_db_dir(path, 1)
            _mark_created(path / "part-0.sqlite3")
            log.info("recovery store created", path=str(path))
    else:
        index = settings.detector.process_id or 0
        own = path / f"part-{index}.sqlite3"
        if not own.exists():
            with tempfile.TemporaryDirectory(dir=path) as scratch:
                init_db_dir(Path(scratch), processes)
                _mark_created(Path(scratch) / own.name)
                os.replace(Path(scratch) / own.name, own)
            log.info("recovery partition created", path=str(own), of=processes)
    return RecoveryConfig(str(path))


# A table of our own in each recovery partition says when it was made: before its first
# snapshot, a resumed detector reads back every decision published since then.
_CREATED_TABLE = "fraudstream_store"


def _mark_created(part: Path) -> None:
    with contextlib.closing(sqlite3.connect(part)) as db, db:
        db.execute(f"CREATE TABLE {_CREATED_TABLE} (created_at REAL NOT NULL, version TEXT)")
        db.execute(f"INSERT INTO {_CREATED_TABLE} VALUES (?, ?)", (time.time(), __version__))


def store_created_at(settings: Settings) -> float | None:
    """When this process's recovery partition was made (epoch seconds), if it says."""
    part = settings.recovery_path / f"part-{settings.detector.process_id or 0}.sqlite3"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{part}?mode=ro", uri=True)) as db:
            row = db.execute(f"SELECT MIN(created_at) FROM {_CREATED_TABLE}").fetchone()
    except sqlite3.Error:
        return None
    return float(row[0]) if row and row[0] is not None else None


def waiting_path(settings: Settings) -> Path:
    """This process's store of features waiting for labels: beside its recovery
    snapshots, whose state refers to it; without recovery, a fresh one in the home."""
    # Not "*.sqlite3": Bytewax takes every such file in the folder for a recovery partition.
    name = f"waiting-{settings.detector.process_id or 0}.db"
    if settings.detector.recovery:
        settings.recovery_path.mkdir(parents=True, exist_ok=True)
        return settings.recovery_path / name
    path = settings.local.home / name
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_name(name + "-wal"), path.with_name(name + "-shm")):
        stale.unlink(missing_ok=True)  # no snapshot refers to it: start afresh
    return path
