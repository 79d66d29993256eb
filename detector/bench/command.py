"""``fraudstream bench``: the command that runs the benchmarks of this package."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from detector.cli_settings import command_settings
from detector.settings import Settings

HANDBOOK = Path("../shared/datasets/handbook/transactions-2018-04-01_2018-07-31.csv.gz")


def bench(
    dataset: Annotated[
        Path, typer.Option(help="Handbook CSV (or JSONL) to read transactions from.")
    ] = HANDBOOK,
    transactions: Annotated[
        int, typer.Option(min=1, help="Transactions pre-loaded for the throughput runs.")
    ] = 100_000,
    partitions: Annotated[int, typer.Option(min=1, help="Partitions of every topic.")] = 4,
    processes: Annotated[
        str, typer.Option(help="Detector process counts to run, comma-separated.")
    ] = "1,2",
    repeat: Annotated[int, typer.Option(min=1, help="Runs of each system (best is shown).")] = 1,
    rate: Annotated[
        float, typer.Option(min=1, help="Offered load of the latency phase, tx/s.")
    ] = 1000.0,
    latency_seconds: Annotated[
        float, typer.Option(min=0, help="Length of the latency phase; 0 skips it.")
    ] = 20.0,
    bootstrap_servers: Annotated[
        str | None,
        typer.Option(
            help="Use this broker (default FRAUDSTREAM_BOOTSTRAP_SERVERS if set, else a "
            "fresh local broker in a temporary folder)."
        ),
    ] = None,
    memory: Annotated[
        bool, typer.Option("--memory", help="Run the memory benchmark instead (long).")
    ] = False,
    days: Annotated[
        float | None, typer.Option(help="--memory: event-time days to replay (default: all).")
    ] = None,
    score: Annotated[
        bool,
        typer.Option(
            "--score",
            help="Measure synchronous scoring instead: POST /api/score at --score-rate for "
            "--latency-seconds, through the API and the detector.",
        ),
    ] = False,
    score_rate: Annotated[
        float, typer.Option(min=1, help="--score: requests a second (open loop).")
    ] = 200.0,
) -> None:
    """Benchmark the streaming path through a real Kafka broker (no wall-clock limits).

    Throughput of the plain loop (consumer, ScoringCore, producer) and of the detector
    with each process count, on the same pre-loaded Handbook transactions; peak RSS per
    process; recovery store size; then the latency at --rate tx/s. With --memory: months
    of the Handbook through one detector process, RSS and state every 10 event days. With
    --score: the latency of POST /api/score at --score-rate requests a second.
    """
    from detector.bench.infra import BenchError

    settings = command_settings()
    if not dataset.is_file():
        raise typer.BadParameter(f"{dataset} is not a file", param_hint="--dataset")
    try:
        counts = tuple(int(p) for p in processes.split(",") if p.strip())
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--processes") from error
    if not counts or min(counts) < 1:
        raise typer.BadParameter("give process counts >= 1, e.g. 1,2,4", param_hint="--processes")
    try:
        if memory:
            _bench_memory(settings, dataset, partitions, days, bootstrap_servers)
            return
        if score:
            from detector.bench.score import ScoreOptions, format_score_report, run_score_bench

            options_score = ScoreOptions(
                dataset=dataset,
                rate=score_rate,
                seconds=latency_seconds,
                partitions=partitions,
                bootstrap=bootstrap_servers,
            )
            typer.echo(format_score_report(run_score_bench(settings, options_score)))
            return
        from detector.bench.throughput import BenchOptions, format_report, run_bench

        options = BenchOptions(
            dataset=dataset,
            transactions=transactions,
            partitions=partitions,
            processes=counts,
            repeat=repeat,
            rate=rate,
            latency_seconds=latency_seconds,
            bootstrap=bootstrap_servers,
        )
        report = run_bench(settings, options)
    except BenchError as error:
        typer.echo(f"bench failed: {error}", err=True)
        raise typer.Exit(1) from error
    typer.echo(format_report(report, counts))
    if not report.complete:
        typer.echo("some transactions got no decision, or more than one", err=True)
        raise typer.Exit(1)


def _bench_memory(
    settings: Settings, dataset: Path, partitions: int, days: float | None, bootstrap: str | None
) -> None:
    from detector.bench.memory import (
        MemoryOptions,
        format_header,
        format_sample,
        format_summary,
        run_memory,
    )

    typer.echo(format_header())
    options = MemoryOptions(dataset=dataset, days=days, partitions=partitions, bootstrap=bootstrap)
    report = run_memory(
        settings, options, on_sample=lambda s, prev: typer.echo(format_sample(s, prev))
    )
    typer.echo(format_summary(report))
