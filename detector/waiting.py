"""Features waiting for a label, on local disk: RAM bounded by a budget, whatever the traffic.

A label may come 45 days after its transaction (a chargeback), and the model must then
learn from the features the transaction had when it was scored. At production volume
those features do not fit in memory (100 transactions a second for 45 days is 389
million vectors), and kept in a terminal's keyed state they would be snapshotted again
with every new transaction of that terminal. So the detector keeps them in an embedded
SQLite database beside its recovery snapshots, one per process, with a page cache of
``WAITING_CACHE_MB``: what does not fit lives on disk.

The terminal's keyed state keeps only a small handle (``StoredPending``): how far it has
presumed transactions legitimate, and which transactions of the not yet presumed days
already have a label. Everything else is derived from the rows, which are only ever
written (the same row again after a replay) or deleted once older than the label
horizon, so a crash and resume from a snapshot neither loses a waiting vector nor learns
a label twice:

- rows are committed before a snapshot of the terminal is handed to Bytewax, so a
  snapshot never refers to a row that is not on disk;
- a label does not delete its row (a replayed label finds it again), and the set of
  labelled transactions travels in the snapshot;
- presuming transactions legitimate moves a frontier that travels in the snapshot, so a
  resumed terminal presumes again exactly what its restored models have not learned.
"""

from __future__ import annotations

import array
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import structlog

from models.pending import FEATURE_TYPECODE

log = structlog.get_logger(__name__)

DAY = 86400.0
# Rows are deleted this long after they leave the label horizon: a resumed detector may
# still look up a row a little past the horizon of the run that crashed.
PURGE_MARGIN_SECONDS = DAY
JOURNAL_LIMIT_BYTES = 4 * 2**20
# ``between`` reads a span of up to this many days by primary key, day by day; a longer
# one (a terminal's first presumption, or event times years apart) through the index of
# the terminal's rows.
DAYS_BY_KEY = 16
# The layout of the rows (``PRAGMA user_version``): a file written with another one is
# refused rather than misread.
STORE_FORMAT = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS waiting (
    day INTEGER NOT NULL,
    terminal TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    ts REAL NOT NULL,
    features BLOB NOT NULL,
    PRIMARY KEY (day, terminal, transaction_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS waiting_by_id ON waiting (terminal, transaction_id);
CREATE TABLE IF NOT EXISTS scores (
    model TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    ts REAL NOT NULL,
    score REAL NOT NULL,
    alerted INTEGER NOT NULL,
    PRIMARY KEY (model, transaction_id)
) WITHOUT ROWID;
"""


class StoreFormatError(RuntimeError):
    """The waiting features' file was written by a version with another row layout."""


class WaitingStore:
    """One process's waiting features: an SQLite file, a connection per worker thread.

    Parameters
    ----------
    path
        The database file (created if missing).
    cache_mb
        Page cache per connection: the RAM the waiting features may hold.
    shared
        Several worker threads write: each write is its own transaction, so that no
        thread holds the file while another waits (one writer at a time in SQLite);
        otherwise the only writer commits once per snapshot (5x cheaper per row).
    """

    def __init__(self, path: Path, cache_mb: int, shared: bool = False) -> None:
        self.path = path
        self.cache_mb = cache_mb
        self.shared = shared
        self._lock = threading.Lock()
        # One connection per worker thread, by thread id: Bytewax's workers are threads
        # Python did not start, whose ``threading.local`` values do not last from one
        # call into Python to the next.
        self._connections: dict[int, sqlite3.Connection] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            db = self._connect()
            self.rows = int(db.execute("SELECT COUNT(*) FROM waiting").fetchone()[0])
            self.scores = dict(
                db.execute("SELECT model, COUNT(*) FROM scores GROUP BY model").fetchall()
            )

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path,
            timeout=60.0,  # a writer waits for another's statement rather than fail
            check_same_thread=False,
            isolation_level=None if self.shared else "DEFERRED",
        )
        # WAL: readers never block the writer. NORMAL: a committed write survives the
        # process being killed (the OS has it); a power loss may lose the last ones.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # The log grows to a snapshot interval's writes; after a checkpoint it is cut back.
        db.execute(f"PRAGMA journal_size_limit={JOURNAL_LIMIT_BYTES}")
        db.execute(f"PRAGMA cache_size=-{self.cache_mb * 1024}")
        self._check_format(db)
        db.executescript(_SCHEMA)
        db.commit()
        self._connections[threading.get_ident()] = db
        return db

    def _check_format(self, db: sqlite3.Connection) -> None:
        found = int(db.execute("PRAGMA user_version").fetchone()[0])
        tables = db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
        if found == 0 and not tables:  # a new file
            db.execute(f"PRAGMA user_version={STORE_FORMAT}")
        elif found != STORE_FORMAT:
            db.close()
            raise StoreFormatError(
                f"{self.path} holds waiting features in format {found}, this version "
                f"reads format {STORE_FORMAT}: delete FRAUDSTREAM_RECOVERY_DIR to start "
                "from scratch, or run the version that wrote it"
            )

    @property
    def _db(self) -> sqlite3.Connection:
        db = self._connections.get(threading.get_ident())
        if db is None:
            with self._lock:
                db = self._connect()
        return db

    def put(self, terminal: str, transaction_id: str, ts: float, values: bytes) -> None:
        """Keep a transaction's features (again, after a replay: the same row)."""
        db = self._db
        cursor = db.execute(
            "INSERT OR IGNORE INTO waiting VALUES (?, ?, ?, ?, ?)",
            (_day(ts), terminal, transaction_id, ts, values),
        )
        if cursor.rowcount:
            with self._lock:
                self.rows += 1
        else:
            db.execute(
                "UPDATE waiting SET day = ?, ts = ?, features = ? "
                "WHERE terminal = ? AND transaction_id = ?",
                (_day(ts), ts, values, terminal, transaction_id),
            )

    def get(self, terminal: str, transaction_id: str) -> tuple[float, bytes] | None:
        row = self._db.execute(
            "SELECT ts, features FROM waiting WHERE terminal = ? AND transaction_id = ?",
            (terminal, transaction_id),
        ).fetchone()
        return (float(row[0]), bytes(row[1])) if row is not None else None

    def between(self, terminal: str, after: float, upto: float) -> list[tuple[str, bytes]]:
        """A terminal's transactions with ``after < ts <= upto``, oldest first."""
        where: str = "terminal = ? AND ts > ? AND ts <= ?"
        params: list[object] = [terminal, after, upto]
        if after > float("-inf") and _day(upto) - _day(after) <= DAYS_BY_KEY:
            days = range(_day(after), _day(upto) + 1)  # the usual case: by primary key
            where = f"day IN ({', '.join('?' * len(days))}) AND {where}"
            params = [*days, *params]
        return [
            (str(tx), bytes(values))
            for tx, values in self._db.execute(
                f"SELECT transaction_id, features FROM waiting WHERE {where} "
                "ORDER BY ts, transaction_id",
                params,
            )
        ]

    def put_score(
        self, model: str, transaction_id: str, ts: float, score: float, alerted: bool
    ) -> None:
        """Keep a model's decision-time score of a transaction; after a replay the first
        stays, as the decision published with it does."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO scores VALUES (?, ?, ?, ?, ?)",
            (model, transaction_id, ts, score, int(alerted)),
        )
        if cursor.rowcount:
            with self._lock:
                self.scores[model] = self.scores.get(model, 0) + 1

    def get_score(self, model: str, transaction_id: str) -> tuple[float, bool] | None:
        row = self._db.execute(
            "SELECT score, alerted FROM scores WHERE model = ? AND transaction_id = ?",
            (model, transaction_id),
        ).fetchone()
        return (float(row[0]), bool(row[1])) if row is not None else None

    def purge_before(self, ts: float) -> int:
        """Delete every row (features and scores) older than ``ts``; how many features
        went. The features are kept in day order, so that this deletes whole pages rather
        than a few rows of every page."""
        db = self._db
        day = _day(ts)
        gone = db.execute("DELETE FROM waiting WHERE day < ?", (day,)).rowcount
        gone += db.execute("DELETE FROM waiting WHERE day = ? AND ts < ?", (day, ts)).rowcount
        db.execute("DELETE FROM scores WHERE ts < ?", (ts,))
        db.commit()
        with self._lock:
            self.rows -= gone
            self.scores = dict(
                db.execute("SELECT model, COUNT(*) FROM scores GROUP BY model").fetchall()
            )
        return int(gone)

    def commit(self) -> None:
        """Make this thread's writes durable (before a snapshot refers to them)."""
        db = self._connections.get(threading.get_ident())
        if db is not None and db.in_transaction:
            db.commit()

    def close(self) -> None:
        with self._lock:
            for db in self._connections.values():
                db.close()
            self._connections.clear()


def _day(ts: float) -> int:
    """The UTC day of an event time (days since 1970-01-01)."""
    return int(ts // DAY)


_stores: dict[Path, WaitingStore] = {}
_stores_lock = threading.Lock()


def waiting_store(path: Path, cache_mb: int, shared: bool = False) -> WaitingStore:
    """This process's store at ``path`` (opened once, shared by its worker threads)."""
    with _stores_lock:
        store = _stores.get(path)
        if store is None:
            store = _stores[path] = WaitingStore(path, cache_mb, shared)
        return store


class _StoreHandle:
    """What a keyed state holds of the process's store: its file, opened on first use
    (and pickled without the open store)."""

    store_path: Path
    cache_mb: int

    def __getstate__(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "_store"}

    @property
    def store(self) -> WaitingStore:
        store: WaitingStore | None = self.__dict__.get("_store")
        if store is None:
            store = self.__dict__["_store"] = waiting_store(self.store_path, self.cache_mb)
        return store


class StoredScores(_StoreHandle):
    """A model's decision-time scores waiting for their labels, in a ``WaitingStore``
    (``models.ScoreBook``): the model's snapshot keeps only this handle.

    A score is never deleted when its label comes (a label replayed after a crash finds
    it again); it goes with the features, past the label horizon.
    """

    def __init__(self, model: str, store_path: Path, cache_mb: int) -> None:
        self.model = model
        self.store_path = store_path
        self.cache_mb = cache_mb

    def put(self, transaction_id: str, ts: float, score: float, alerted: bool) -> None:
        self.store.put_score(self.model, transaction_id, ts, score, alerted)

    def take(self, transaction_id: str) -> tuple[float, bool] | None:
        return self.store.get_score(self.model, transaction_id)

    def __len__(self) -> int:
        return self.store.scores.get(self.model, 0)


class StoredPending(_StoreHandle):
    """A terminal's waiting features, kept in a ``WaitingStore``: the part of the
    terminal's keyed state that stays small (it pickles without the store).

    The same interface as ``models.PendingFeatures`` (its RAM twin, which the offline
    replay uses): ``record``, ``get``, ``mark_labelled``, ``expire`` and ``len``.
    """

    def __init__(
        self,
        terminal: str,
        names: Sequence[str],
        store_path: Path,
        cache_mb: int,
        horizon_days: float = 45.0,
        presume_legit_days: float = 0.0,
    ) -> None:
        self.terminal = terminal
        self.names = tuple(names)
        self.store_path = store_path
        self.cache_mb = cache_mb
        self.horizon_days = horizon_days
        self.presume_legit_days = presume_legit_days
        self.latest = float("-inf")  # the latest transaction time recorded
        self.presumed_until = float("-inf")  # transactions up to here were presumed
        # labelled transactions not yet past ``presumed_until``: id -> time
        self.labelled: dict[str, float] = {}
        self.recorded = 0  # transactions recorded (an upper bound of those waiting)

    def __len__(self) -> int:
        return self.recorded

    def record(self, transaction_id: str, ts: float, features: dict[str, float]) -> None:
        get = features.get
        values = array.array(FEATURE_TYPECODE, [get(name, 0.0) for name in self.names]).tobytes()
        self.store.put(self.terminal, transaction_id, ts, values)
        self.latest = max(self.latest, ts)
        self.recorded += 1

    def get(self, transaction_id: str) -> dict[str, float] | None:
        row = self.store.get(self.terminal, transaction_id)
        if row is None or row[0] < self.latest - self.horizon_days * DAY:
            return None
        return self._features(row[1])

    def mark_labelled(self, transaction_id: str) -> None:
        row = self.store.get(self.terminal, transaction_id)
        if row is not None and row[0] > self.presumed_until:
            self.labelled[transaction_id] = row[0]

    def expire(self, now: float) -> list[tuple[str, dict[str, float]]]:
        """The transactions presumed legitimate as of ``now`` (each once)."""
        if self.presume_legit_days <= 0:
            return []
        upto = now - self.presume_legit_days * DAY
        if upto <= self.presumed_until:
            return []
        rows = self.store.between(self.terminal, self.presumed_until, upto)
        presumed = [(tx, self._features(v)) for tx, v in rows if tx not in self.labelled]
        self.presumed_until = upto
        self.labelled = {tx: ts for tx, ts in self.labelled.items() if ts > upto}
        return presumed

    def idle(self, now: float) -> bool:
        """Nothing of this terminal can still be learned as of ``now``."""
        return self.latest < now - self.horizon_days * DAY and not self.labelled

    def _features(self, values: bytes) -> dict[str, float]:
        return dict(zip(self.names, array.array(FEATURE_TYPECODE, values), strict=True))
