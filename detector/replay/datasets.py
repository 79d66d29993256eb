"""Reading and writing transaction datasets (CSV or JSON lines, optionally gzipped).

Two CSV layouts are understood: the Fraud Detection Handbook's (``TRANSACTION_ID``,
``TX_DATETIME``, ... ``TX_FRAUD_SCENARIO``) and one with the ``Transaction`` contract's
own field names plus optional ``is_fraud`` and ``scenario`` columns. JSON lines are
``Transaction`` objects with optional extra keys ``is_fraud`` and ``scenario``.

Invalid rows never stop a replay: they are skipped and counted on the reader.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from pydantic import ValidationError

from detector.contracts import Transaction

MAX_ERRORS_KEPT = 10

HANDBOOK_COLUMNS = (
    "TRANSACTION_ID",
    "TX_DATETIME",
    "CUSTOMER_ID",
    "TERMINAL_ID",
    "TX_AMOUNT",
    "TX_FRAUD",
    "TX_FRAUD_SCENARIO",
)
_TRUE = frozenset({"1", "true", "t", "yes", "y"})
_FALSE = frozenset({"0", "false", "f", "no", "n"})


@dataclass(frozen=True, slots=True)
class Record:
    """A transaction with its ground truth, when the source knows it."""

    transaction: Transaction
    is_fraud: bool | None = None
    scenario: int | None = None


class _LabelledTransaction(Transaction):
    """A JSON line: a Transaction plus the optional ground-truth keys."""

    is_fraud: bool | None = None
    scenario: int | None = None


_TRANSACTION_FIELDS = frozenset(Transaction.model_fields)


@dataclass
class DatasetReader(Iterator[Record]):
    """An iterator over a dataset's valid records that counts the rows it skipped.

    The file is opened on the first ``next`` and closed when exhausted or on ``close``.
    """

    path: Path
    limit: int | None = None
    records: int = field(default=0, init=False)
    """Valid records yielded so far."""
    skipped: int = field(default=0, init=False)
    """Invalid rows skipped so far."""
    errors: list[str] = field(default_factory=list, init=False)
    """The first few skip reasons, as ``file:line: reason``."""
    _rows: Iterator[Record] | None = field(default=None, init=False, repr=False)

    def __next__(self) -> Record:
        if self._rows is None:
            self._rows = self._read()
        return next(self._rows)

    def close(self) -> None:
        """Close the file early (iteration then stops)."""
        if self._rows is not None and hasattr(self._rows, "close"):
            self._rows.close()
        self._rows = iter(())

    def __enter__(self) -> DatasetReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _skip(self, line: int, reason: str) -> None:
        self.skipped += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(f"{self.path}:{line}: {reason}")

    def _read(self) -> Iterator[Record]:
        if self.limit is not None and self.limit <= 0:
            return
        kind = dataset_format(self.path)
        with _open_text(self.path) as stream:
            rows = self._read_csv(stream) if kind == "csv" else self._read_jsonl(stream)
            for record in rows:
                self.records += 1
                yield record
                if self.limit is not None and self.records >= self.limit:
                    return

    def _read_csv(self, stream: IO[str]) -> Iterator[Record]:
        reader = csv.reader(stream)
        header = next(reader, None)
        if header is None:
            return
        header = [name.strip() for name in header]
        parse = _csv_row_parser(header)
        if parse is None:
            self._skip(1, f"unknown CSV header {header!r}")
            return
        width = len(header)
        for row in reader:
            if len(row) != width:
                if row:  # blank lines are not worth an error
                    self._skip(reader.line_num, f"expected {width} fields, got {len(row)}")
                continue
            try:
                yield parse(row)
            except (ValueError, ValidationError) as error:
                self._skip(reader.line_num, _reason(error))

    def _read_jsonl(self, stream: IO[str]) -> Iterator[Record]:
        for line_number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                yield _parse_json_line(line)
            except (ValueError, ValidationError) as error:
                self._skip(line_number, _reason(error))


def read_dataset(path: Path, *, limit: int | None = None) -> DatasetReader:
    """Read a CSV or JSON-lines dataset lazily, skipping and counting invalid rows.

    Parameters
    ----------
    path
        ``.csv``, ``.jsonl``, ``.json`` or ``.ndjson``, each optionally ``.gz``.
    limit
        Stop after this many valid records.

    Returns
    -------
    DatasetReader
        An iterator of ``Record``; its ``skipped`` and ``errors`` report bad rows.
    """
    dataset_format(path)  # fail fast on an unknown suffix, before iteration starts
    return DatasetReader(Path(path), limit)


def write_jsonl(records: Iterable[Record], path: Path) -> int:
    """Write records as JSON lines (gzipped if the name ends in ``.gz``); return the count."""
    n = 0
    with _open_text(Path(path), write=True) as stream:
        for record in records:
            stream.write(_json_line(record))
            n += 1
    return n


def dataset_format(path: Path) -> str:
    """``"csv"`` or ``"jsonl"``, from the file name's suffixes."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    if suffixes and suffixes[-1] == ".csv":
        return "csv"
    if suffixes and suffixes[-1] in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    raise ValueError(f"{path}: expected a .csv, .jsonl or .json file, optionally .gz")


def _open_text(path: Path, *, write: bool = False) -> IO[str]:
    # newline="" lets the csv module see the file's own line endings.
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "wt" if write else "rt", encoding="utf-8", newline="")
    return open(path, "w" if write else "r", encoding="utf-8", newline="")


def _json_line(record: Record) -> str:
    body = record.transaction.model_dump_json(exclude_none=True)
    extras = ""
    if record.is_fraud is not None:
        extras += f',"is_fraud":{"true" if record.is_fraud else "false"}'
    if record.scenario is not None:
        extras += f',"scenario":{int(record.scenario)}'
    # A Transaction always dumps as a non-empty object, so splice before its "}".
    return body[:-1] + extras + "}\n"


def _parse_json_line(line: str) -> Record:
    # One strict JSON validation of the whole line, extras included, then the
    # Transaction is rebuilt from already-validated values without validating again.
    parsed = _LabelledTransaction.model_validate_json(line)
    transaction = Transaction.model_construct(
        _fields_set=parsed.model_fields_set & _TRANSACTION_FIELDS,
        **{name: getattr(parsed, name) for name in _TRANSACTION_FIELDS},
    )
    return Record(transaction, parsed.is_fraud, parsed.scenario)


def _csv_row_parser(header: list[str]) -> Callable[[list[str]], Record] | None:
    """The row parser for this header, or None if the layout is unknown."""
    if set(HANDBOOK_COLUMNS) <= set(header):
        return _handbook_parser(header)
    if {"transaction_id", "timestamp", "card_id", "terminal_id", "amount"} <= set(header):
        return _contract_parser(header)
    return None


def _handbook_parser(header: list[str]) -> Callable[[list[str]], Record]:
    i_id, i_time, i_card, i_term, i_amount, i_fraud, i_scenario = (
        header.index(name) for name in HANDBOOK_COLUMNS
    )

    def parse(row: list[str]) -> Record:
        # Validating with the contract is cheap (pydantic-core is compiled, and faster
        # than model_construct); the costly part would be parsing strings in lax mode,
        # so the cells are converted here first.
        transaction = Transaction.model_validate(
            {
                "transaction_id": row[i_id],
                "timestamp": _utc(row[i_time]),
                "card_id": row[i_card],
                "terminal_id": row[i_term],
                "amount": _amount(row[i_amount]),
            }
        )
        return Record(transaction, _flag(row[i_fraud]), _int_or_none(row[i_scenario]))

    return parse


def _contract_parser(header: list[str]) -> Callable[[list[str]], Record]:
    columns = [(i, name) for i, name in enumerate(header) if name in _TRANSACTION_FIELDS]
    i_fraud = header.index("is_fraud") if "is_fraud" in header else None
    i_scenario = header.index("scenario") if "scenario" in header else None

    def parse(row: list[str]) -> Record:
        values: dict[str, Any] = {}
        for i, name in columns:
            if row[i] == "":
                continue  # an empty optional column means "absent"
            values[name] = _contract_value(name, row[i])
        transaction = Transaction.model_validate(values)
        is_fraud = _flag(row[i_fraud]) if i_fraud is not None else None
        scenario = _int_or_none(row[i_scenario]) if i_scenario is not None else None
        return Record(transaction, is_fraud, scenario)

    return parse


def _contract_value(name: str, text: str) -> Any:
    """Turn a CSV cell into the Python type the strict contract expects."""
    if name == "amount":
        return float(text)
    if name == "timestamp":
        return datetime.fromisoformat(text)  # naive times fail the contract's check
    if name == "metadata":
        return json.loads(text)
    return text


def _utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    # The Handbook's times carry no offset; they are read as UTC.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _amount(text: str) -> float:
    amount = float(text)
    if not math.isfinite(amount) or amount <= 0:
        raise ValueError(f"amount must be a finite number > 0, got {text!r}")
    return amount


def _flag(text: str) -> bool | None:
    value = text.strip().lower()
    if value == "":
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _int_or_none(text: str) -> int | None:
    return int(text) if text.strip() else None


def _reason(error: Exception) -> str:
    if isinstance(error, ValidationError):
        first = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "record"
        return f"{where}: {first['msg']} ({error.error_count()} error(s))"
    return str(error)
