"""`fraudstream bench --score` end to end on a tiny size, against the session's broker.

A smoke test: every request was answered (decided, or the fallback), every one got its
reply from the detector, and the report has its three rows. No timing is asserted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from detector.bench.score import ScoreOptions, format_score_report, run_score_bench
from detector.replay.datasets import write_jsonl
from detector.replay.simulator import SimulationConfig, simulate
from detector.settings import LocalSettings, Settings

pytestmark = pytest.mark.slow


def test_score_bench_answers_every_request(kafka_settings: Settings, tmp_path: Path) -> None:
    dataset = tmp_path / "transactions.jsonl"
    config = SimulationConfig(
        n_customers=200, n_terminals=400, seed=3, start=datetime(2018, 4, 1, tzinfo=UTC), days=3
    )
    assert write_jsonl(simulate(config), dataset) > 400
    settings = kafka_settings.model_copy(update={"local": LocalSettings(home=tmp_path / "home")})
    options = ScoreOptions(
        dataset=dataset,
        rate=50.0,
        seconds=2.0,
        warmup=300,
        partitions=2,
        bootstrap=settings.kafka.bootstrap_servers,
    )

    report = run_score_bench(settings, options)

    assert report.score.sent == 100
    assert set(report.score.answers) <= {"decided", "degraded"}, report.score.answers
    assert report.score.answers.get("decided", 0) > 0, report.score.answers
    assert report.peer.answers == {"ok": 100}
    # Every request was published once and answered once by the detector.
    assert report.inside.answers == {"replied": 100}, report.inside
    table = format_score_report(report)
    assert "POST /api/score" in table and "GET /health" in table and "in the detector" in table
