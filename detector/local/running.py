"""The one ``fraudstream up`` of a home: its lock, and what it tells the other commands.

``up`` holds an exclusive lock on ``<home>/up.lock`` for as long as it runs, so a second
``up`` on the same home refuses to start before it starts anything. The kernel releases
the lock when the process ends, however it ends: a lock file left by a dead system
blocks nothing. Beside it, ``<home>/up.json`` (mode 0600: it may hold the local admin
key) records the running system's pid and page address, for the refusal message and for
``fraudstream keys url``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

LOCK_NAME = "up.lock"
RECORD_NAME = "up.json"


class AlreadyRunningError(RuntimeError):
    """Another ``fraudstream up`` runs on this home."""

    def __init__(self, home: Path, record: RunRecord | None) -> None:
        if record is None:
            what = "another `fraudstream up` is starting or running"
        else:
            what = f"`fraudstream up` already runs here (pid {record.pid}, page {record.page})"
        super().__init__(
            f"{what} in {home}: stop it first, or give this one another FRAUDSTREAM_HOME"
        )
        self.record = record


@dataclass(frozen=True)
class RunRecord:
    """What a running ``fraudstream up`` tells the other commands of its home."""

    pid: int
    page: str
    """The page's address, without a key."""
    admin_url: str | None = None
    """The page's address signed in with this run's admin key (None: keys configured)."""


def lock_path(home: Path) -> Path:
    return home / LOCK_NAME


def record_path(home: Path) -> Path:
    return home / RECORD_NAME


@contextlib.contextmanager
def hold_home(home: Path) -> Iterator[None]:
    """Hold ``home`` for this process; ``AlreadyRunningError`` if another ``up`` holds it."""
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(home), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunningError(home, read_record(home)) from None
        try:
            yield
        finally:
            # Removed while still locked: a newcomer never reads this run's record.
            record_path(home).unlink(missing_ok=True)
    finally:
        os.close(fd)  # releases the lock


def write_record(home: Path, record: RunRecord) -> None:
    """Write ``record`` with mode 0600 from its creation (it may hold a key)."""
    path = record_path(home)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(record), out)
        out.write("\n")
    partial.replace(path)


def read_record(home: Path) -> RunRecord | None:
    """The record of the ``up`` running on ``home``, or None when none runs."""
    if not is_held(home):
        return None
    try:
        data = json.loads(record_path(home).read_text())
        return RunRecord(
            pid=int(data["pid"]), page=str(data["page"]), admin_url=data.get("admin_url")
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # still starting: the record is written once the keys exist


def is_held(home: Path) -> bool:
    """Whether a live process holds ``home``'s lock."""
    try:
        fd = os.open(lock_path(home), os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the lock if this probe took it
    return False
