"""Reading and writing datasets: formats, the Handbook's columns, and skipped rows."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from detector.contracts import Transaction
from detector.replay.datasets import Record, read_dataset, write_jsonl

HANDBOOK_CSV = """\
TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,TX_FRAUD,TX_FRAUD_SCENARIO
0,2018-04-01T00:00:31,596,3156,57.16,0,0
1,2018-04-01T00:02:10,4961,3412,81.51,1,2
2,2018-04-01T00:07:56,2,1365,0.0,0,0
3,2018-04-01T00:09:29,4128,8737,nan,0,0
4,not-a-time,4128,8737,12.00,0,0
5,2018-04-01T00:10:00,4128,8737
6,2018-04-01T00:11:00,17,42,1146.5,1,3
"""


def _records() -> list[Record]:
    at = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    return [
        Record(
            Transaction(
                transaction_id="t-1",
                timestamp=at,
                card_id="card-1",
                terminal_id="term-1",
                amount=12.5,
            ),
            is_fraud=False,
            scenario=0,
        ),
        Record(
            Transaction(
                transaction_id="t-2",
                timestamp=at + timedelta(seconds=5),
                card_id="card-2",
                terminal_id="term-9",
                amount=999.99,
                currency="EUR",
                merchant_category="5411",
                country="BE",
                channel="online",
                device_id="dev-3",
                metadata={"ip": "10.0.0.1"},
            ),
            is_fraud=True,
            scenario=3,
        ),
        Record(
            Transaction(
                transaction_id="t-3",
                timestamp=datetime(2024, 5, 1, 14, 31, tzinfo=timezone(timedelta(hours=2))),
                card_id="card-1",
                terminal_id="term-2",
                amount=3.0,
            ),
        ),
    ]


def _write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as stream:
            stream.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["data.jsonl", "data.jsonl.gz", "data.json", "data.ndjson.gz"])
def test_jsonl_round_trip(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    assert write_jsonl(_records(), path) == 3
    reader = read_dataset(path)
    assert list(reader) == _records()
    assert reader.skipped == 0 and reader.records == 3


def test_jsonl_gz_is_really_gzipped_and_extras_stay_out_of_the_transaction(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data.jsonl.gz"
    write_jsonl(_records(), path)
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    assert '"is_fraud":true' in lines[1] and '"scenario":3' in lines[1]
    assert "is_fraud" not in lines[2]  # unknown ground truth is left out
    record = next(read_dataset(path))
    assert "is_fraud" not in record.transaction.model_dump()


@pytest.mark.parametrize("name", ["data.csv", "data.csv.gz"])
def test_contract_csv_round_trip(tmp_path: Path, name: str) -> None:
    text = (
        "transaction_id,timestamp,card_id,terminal_id,amount,currency,metadata,is_fraud,scenario\n"
        "t-1,2024-05-01T12:30:00Z,card-1,term-1,12.5,,,false,0\n"
        't-2,2024-05-01T12:30:05+00:00,card-2,term-9,999.99,EUR,"{""ip"": ""10.0.0.1""}",1,3\n'
        "t-3,2024-05-01T14:31:00+02:00,card-1,term-2,3,,,,\n"
    )
    records = list(read_dataset(_write(tmp_path / name, text)))
    assert [r.transaction.transaction_id for r in records] == ["t-1", "t-2", "t-3"]
    assert [(r.is_fraud, r.scenario) for r in records] == [(False, 0), (True, 3), (None, None)]
    assert records[1].transaction.currency == "EUR"
    assert records[1].transaction.metadata == {"ip": "10.0.0.1"}
    assert records[2].transaction.amount == 3.0
    assert records[2].transaction.timestamp == datetime(2024, 5, 1, 12, 31, tzinfo=UTC)
    # The same records survive a trip through JSON lines.
    jsonl = tmp_path / "again.jsonl"
    write_jsonl(records, jsonl)
    assert list(read_dataset(jsonl)) == records


@pytest.mark.parametrize("name", ["handbook.csv", "handbook.csv.gz"])
def test_handbook_columns_map_to_the_contract(tmp_path: Path, name: str) -> None:
    reader = read_dataset(_write(tmp_path / name, HANDBOOK_CSV))
    records = list(reader)
    assert [r.transaction.transaction_id for r in records] == ["0", "1", "6"]
    first = records[0]
    assert first.transaction == Transaction(
        transaction_id="0",
        timestamp=datetime(2018, 4, 1, 0, 0, 31, tzinfo=UTC),
        card_id="596",
        terminal_id="3156",
        amount=57.16,
    )
    assert first.transaction.timestamp.utcoffset() == timedelta(0)
    assert (first.is_fraud, first.scenario) == (False, 0)
    assert (records[1].is_fraud, records[1].scenario) == (True, 2)
    assert (records[2].is_fraud, records[2].scenario) == (True, 3)


def test_bad_rows_are_skipped_counted_and_located(tmp_path: Path) -> None:
    path = _write(tmp_path / "handbook.csv", HANDBOOK_CSV)
    reader = read_dataset(path)
    assert len(list(reader)) == 3
    assert reader.skipped == 4
    assert [error.split(": ")[0] for error in reader.errors] == [
        f"{path}:4",
        f"{path}:5",
        f"{path}:6",
        f"{path}:7",
    ]
    assert "amount" in reader.errors[0]


def test_bad_json_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    write_jsonl(_records()[:1], path)
    good = path.read_text()
    path.write_text(
        good
        + "not json\n"
        + good.replace('"amount":12.5', '"amount":0.0')
        + good.replace('"amount":12.5', '"amount":"12.5"')  # strict: no strings
        + good.replace('"card_id"', '"unknown":1,"card_id"')
        + "\n"
        + good
    )
    reader = read_dataset(path)
    assert len(list(reader)) == 2
    assert reader.skipped == 4
    assert reader.errors[1].startswith(f"{path}:3: amount")


def test_limit_stops_after_that_many_valid_records(tmp_path: Path) -> None:
    path = _write(tmp_path / "handbook.csv", HANDBOOK_CSV)
    assert [r.transaction.transaction_id for r in read_dataset(path, limit=2)] == ["0", "1"]
    assert list(read_dataset(path, limit=0)) == []


def test_unknown_suffix_and_header_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"expected a \.csv"):
        read_dataset(tmp_path / "data.parquet")
    path = _write(tmp_path / "other.csv", "a,b\n1,2\n")
    reader = read_dataset(path)
    assert list(reader) == []
    assert reader.skipped == 1 and "unknown CSV header" in reader.errors[0]
