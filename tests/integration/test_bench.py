"""`fraudstream bench` end to end on a tiny size, against the session's broker.

A smoke test: the table lists every system and every transaction got exactly one
decision in each. No timing is asserted: the figures depend on the machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from detector.replay.datasets import write_jsonl
from detector.replay.simulator import SimulationConfig, simulate
from detector.settings import Settings

REPO = Path(__file__).resolve().parents[2]
TRANSACTIONS = 2000


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Handbook-like dataset from the project's simulator (runs anywhere)."""
    path = tmp_path_factory.mktemp("bench") / "transactions.jsonl"
    config = SimulationConfig(
        n_customers=500, n_terminals=1000, seed=7, start=datetime(2018, 4, 1, tzinfo=UTC), days=5
    )
    written = write_jsonl(simulate(config), path)
    assert written > TRANSACTIONS + 400  # the throughput runs plus the latency phase
    return path


def bench_env(kafka_settings: Settings, tmp_path: Path) -> dict[str, str]:
    """``fraudstream bench`` on the session's broker, its files under ``tmp_path``."""
    return {
        **os.environ,
        "FRAUDSTREAM_BOOTSTRAP_SERVERS": kafka_settings.kafka.bootstrap_servers,
        "FRAUDSTREAM_HOME": str(tmp_path / "home"),
        "FRAUDSTREAM_LOG_LEVEL": "WARNING",
    }


@pytest.mark.slow
def test_bench_prints_every_system_and_decides_every_transaction(
    kafka_settings: Settings, dataset: Path, tmp_path: Path
) -> None:
    env = bench_env(kafka_settings, tmp_path)
    args = ["--dataset", str(dataset), "--transactions", str(TRANSACTIONS), "--partitions", "2"]
    args += ["--processes", "1,2", "--rate", "200", "--latency-seconds", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "detector", "bench", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]

    rows = {
        match.group(1).strip(): match.group(2)
        for match in re.finditer(r"^(plain loop|detector x\d)\s*\|(.*)$", done.stdout, re.M)
    }
    assert set(rows) == {"plain loop", "detector x1", "detector x2"}, done.stdout
    for system, row in rows.items():
        # The last column: decided/expected for each run, and no duplicates.
        assert row.rstrip().endswith(f"{TRANSACTIONS:,}/{TRANSACTIONS:,}"), (system, row)
        assert "dup" not in row, (system, row)
    assert "ScoringCore alone in-process" in done.stdout
    latency = re.search(
        r"^latency .*?(\d[\d,]*)/(\d[\d,]*) decided\): p50 .* p99 ", done.stdout, re.M
    )
    assert latency is not None, done.stdout
    assert latency.group(1) == latency.group(2), latency.group(0)


@pytest.mark.slow
def test_memory_bench_reports_the_state_it_holds(
    kafka_settings: Settings, dataset: Path, tmp_path: Path
) -> None:
    env = bench_env(kafka_settings, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "detector", "bench", "--memory", "--dataset", str(dataset)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    header, _, *rows = [line for line in done.stdout.splitlines() if " | " in line or "-+-" in line]
    columns = [c.strip() for c in header.split("|")]
    last = dict(zip(columns, (c.strip() for c in rows[-1].split("|")), strict=True))
    decided = int(last["decided"].replace(",", ""))
    assert decided > 0 and int(last["cards"].replace(",", "")) > 0, done.stdout
    # Every transaction waits for its label (5 days is within the horizon), on disk.
    assert int(last["waiting labels"].replace(",", "")) == decided, done.stdout
    assert float(last["of it waiting"]) > 0, done.stdout
    for column in ("snapshot B/card", "B/terminal", "disk B/waiting label"):
        assert int(last[column].replace(",", "")) > 0, (column, done.stdout)
    assert "peak RSS" in done.stdout
