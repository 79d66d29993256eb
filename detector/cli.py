"""The ``fraudstream`` command line."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import structlog
import typer

from detector import __version__
from detector.local.logs import configure_logging
from detector.settings import Settings

app = typer.Typer(
    name="fraudstream",
    help="Real-time fraud detection for payment streams: Kafka in, online River models, "
    "explainable decisions and alerts out.\n\nEvery setting is read from FRAUDSTREAM_* "
    "environment variables (see the README).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="markdown",
)
broker_app = typer.Typer(
    help="The local Apache Kafka broker (KRaft, one node).", no_args_is_help=True
)
topics_app = typer.Typer(help="Kafka topics of fraudstream.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of the review service.", no_args_is_help=True)
db_app = typer.Typer(help="The review service's database.", no_args_is_help=True)
app.add_typer(broker_app, name="broker")
app.add_typer(topics_app, name="topics")
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")

log = structlog.get_logger("fraudstream")


def _settings() -> Settings:
    from detector.kafka_config import check_durability

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        check_durability(settings.kafka_extra_config)
    except ValueError as error:
        typer.echo(f"fraudstream: {error}", err=True)
        raise typer.Exit(2) from None
    return settings


@app.command()
def version() -> None:
    """Print the fraudstream version."""
    typer.echo(__version__)


@broker_app.command("start")
def broker_start(
    wait: Annotated[float, typer.Option(help="Seconds to wait for the broker to be ready.")] = 90,
) -> None:
    """Start the local broker, or reuse one already reachable at the bootstrap address.

    The first start fetches the Kafka jars from Maven Central into FRAUDSTREAM_HOME.
    """
    from detector.local.broker import LocalBroker

    broker = LocalBroker.from_settings(_settings())
    started = broker.start(wait=wait)
    typer.echo(f"broker {'started' if started else 'already running'} at {broker.bootstrap}")


@broker_app.command("fetch")
def broker_fetch() -> None:
    """Fetch the Apache Kafka jars from Maven Central into the cache (once)."""
    from detector.local.broker import LocalBroker

    libs = LocalBroker.from_settings(_settings()).fetch_jars()
    typer.echo(f"Kafka jars in {libs}")


@broker_app.command("stop")
def broker_stop() -> None:
    """Stop the local broker that fraudstream started (a clean shutdown)."""
    from detector.local.broker import LocalBroker

    stopped = LocalBroker.from_settings(_settings()).stop()
    typer.echo("broker stopped" if stopped else "no broker of ours was running")


@broker_app.command("status")
def broker_status() -> None:
    """Say whether a broker is reachable and whether fraudstream manages it."""
    from detector.local.broker import LocalBroker

    status = LocalBroker.from_settings(_settings()).status()
    typer.echo(
        f"bootstrap: {status.bootstrap}\nreachable: {status.reachable}\n"
        f"managed by fraudstream: {status.managed} (pid {status.pid})\n"
        f"data: {status.data_dir}\nlog: {status.log_file}"
    )
    if not status.reachable:
        raise typer.Exit(1)


@topics_app.command("create")
def topics_create(
    partitions: Annotated[
        int | None,
        typer.Option(help="Partitions per topic (default FRAUDSTREAM_TOPIC_PARTITIONS)."),
    ] = None,
) -> None:
    """Create fraudstream's topics; existing topics are left as they are."""
    from detector.local.topics import create_topics

    settings = _settings()
    for topic, outcome in create_topics(settings, partitions=partitions).items():
        typer.echo(f"{topic}: {outcome}")


@app.command()
def detect() -> None:
    """Run the detector: the Bytewax dataflow that scores transactions from Kafka.

    State and Kafka offsets are snapshotted to FRAUDSTREAM_RECOVERY_DIR, so a restart
    resumes where the last snapshot left off.
    """
    from detector.dataflow import run

    run(_settings())


@app.command()
def api(
    host: Annotated[
        str | None, typer.Option(help="Address (default FRAUDSTREAM_API_HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default FRAUDSTREAM_API_PORT).")] = None,
    kafka: Annotated[
        bool,
        typer.Option(
            "--kafka/--no-kafka",
            help="Read alerts and send labels through Kafka (--no-kafka: the database alone).",
        ),
    ] = True,
) -> None:
    """Serve the review service: the HTTP API, the analysts' page and the Kafka bridge.

    The database (FRAUDSTREAM_DATABASE_URL, default a SQLite file in FRAUDSTREAM_HOME) is
    migrated on start. Every /api route needs a key from FRAUDSTREAM_API_KEYS or
    FRAUDSTREAM_API_KEYS_FILE (see `fraudstream keys new`).
    """
    import uvicorn

    from api.auth import KeyConfigError
    from api.kafka_options import KafkaConfigError
    from api.main import create_app

    settings = _settings()
    try:
        application = create_app(settings, kafka=kafka)
    except KeyConfigError as error:
        raise typer.BadParameter(str(error), param_hint="FRAUDSTREAM_API_KEYS") from error
    except KafkaConfigError as error:
        typer.echo(f"fraudstream api: {error}", err=True)
        raise typer.Exit(2) from None
    uvicorn.run(
        application,
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_level=settings.log_level.lower(),
        # Our own request log leaves out query strings: the page may be opened with ?key=.
        access_log=False,
    )


@keys_app.command("new")
def keys_new(
    role: Annotated[
        str, typer.Option(help="viewer (read), analyst (claim and decide) or admin (models).")
    ] = "analyst",
    name: Annotated[
        str | None, typer.Option(help="Holder's name in the audit trail (default: derived).")
    ] = None,
) -> None:
    """Print a fresh random API key and the environment line that enables it.

    Only a digest of each key is kept in memory by the service; store the key itself
    somewhere safe (a secrets manager, or FRAUDSTREAM_API_KEYS_FILE readable by the
    service alone). Several keys are comma-separated in FRAUDSTREAM_API_KEYS.
    """
    from api.auth import KeyConfigError, new_key, parse_entry

    key = new_key()
    entry = f"{role}:{name}:{key}" if name else f"{role}:{key}"
    try:
        parse_entry(entry, "--role/--name")
    except KeyConfigError as error:
        raise typer.BadParameter(str(error)) from error
    typer.echo(f"key: {key}")
    typer.echo(f"FRAUDSTREAM_API_KEYS={entry}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the review database to the latest schema (the API also does so on start)."""
    from sqlalchemy.engine import make_url

    from api.db import upgrade

    settings = _settings()
    upgrade(settings.database)
    shown = make_url(settings.database).render_as_string(hide_password=True)
    typer.echo(f"database {shown} is at the latest schema")


@app.command()
def simulate(
    rate: Annotated[float, typer.Option(help="Transactions per second at most.")] = 100.0,
    customers: Annotated[int, typer.Option(help="Simulated cards.")] = 5000,
    terminals: Annotated[int, typer.Option(help="Simulated terminals.")] = 10000,
    days_back: Annotated[
        float, typer.Option(help="Start this many days ago; then keep to real time.")
    ] = 30.0,
    days: Annotated[int | None, typer.Option(help="Simulated days (default: endless).")] = None,
    chargeback_delay_days: Annotated[
        float, typer.Option(help="Chargebacks of frauds arrive this many days later; 0: none.")
    ] = 7.0,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: a new one).")] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after this many transactions.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write JSONL (with ground truth) here instead of Kafka.")
    ] = None,
) -> None:
    """Publish simulated card transactions (the Fraud Detection Handbook's simulation).

    Cards and terminals on a grid, per-card spending habits, and three fraud scenarios:
    large amounts, compromised terminals and compromised cards. Simulated time starts
    DAYS_BACK days ago, runs as fast as RATE allows and never passes the wall clock.
    """
    import itertools

    from detector.replay.datasets import write_jsonl
    from detector.replay.publishing import publish, start_time_for_live
    from detector.replay.simulator import SimulationConfig
    from detector.replay.simulator import simulate as run_simulation

    settings = _settings()
    seed = seed if seed is not None else random.SystemRandom().randrange(1_000_000)
    config = SimulationConfig(
        n_customers=customers,
        n_terminals=terminals,
        seed=seed,
        start=start_time_for_live(days_back),
        days=days,
    )
    log.info("simulating", seed=seed, start=config.start.isoformat(), rate=rate)
    records = run_simulation(config)
    if out is not None:
        written = write_jsonl(itertools.islice(records, limit), out)
        typer.echo(f"{written} transactions written to {out}")
        return
    stats = publish(
        records,
        settings,
        rate=rate,
        realtime_cap=True,
        chargeback_delay=timedelta(days=chargeback_delay_days) if chargeback_delay_days else None,
        limit=limit,
        progress=False,
    )
    typer.echo(f"published {stats.transactions} transactions and {stats.labels} chargebacks")


@app.command()
def replay(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV or JSONL dataset, optionally gzipped.", exists=True, dir_okay=False
        ),
    ],
    speedup: Annotated[
        float | None,
        typer.Option(help="Pace by event time, this many times faster (default: no pacing)."),
    ] = None,
    rate: Annotated[float | None, typer.Option(help="Transactions per second at most.")] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after this many transactions.")] = None,
    chargeback_delay_days: Annotated[
        float,
        typer.Option(help="Publish chargebacks for known frauds this many days later; 0: none."),
    ] = 0.0,
) -> None:
    """Publish a dataset's transactions to Kafka in timestamp order, with a progress bar.

    Reads the Fraud Detection Handbook's CSV (TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID,
    TERMINAL_ID, TX_AMOUNT, TX_FRAUD, ...) or files in the Transaction contract.
    """
    from detector.replay.datasets import read_dataset
    from detector.replay.publishing import publish

    settings = _settings()
    reader = read_dataset(file, limit=limit)
    stats = publish(
        reader,
        settings,
        rate=rate,
        speedup=speedup,
        chargeback_delay=timedelta(days=chargeback_delay_days) if chargeback_delay_days else None,
        limit=limit,
        progress=True,
    )
    typer.echo(
        f"published {stats.transactions} transactions and {stats.labels} chargebacks in "
        f"{stats.seconds:.1f} s ({stats.transactions / max(stats.seconds, 1e-9):,.0f}/s); "
        f"{reader.skipped} invalid rows skipped"
    )


@app.command()
def evaluate(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV or JSONL dataset with ground truth (is_fraud / TX_FRAUD).",
            exists=True,
            dir_okay=False,
        ),
    ],
    test_week: Annotated[
        list[str] | None,
        typer.Option(
            help="First day (YYYY-MM-DD) of a 7-day test week; repeat for more weeks. "
            "Default: 2018-07-04, 07-11, 07-18 and 07-25."
        ),
    ] = None,
    review_capacity: Annotated[
        int, typer.Option(help="Cards analysts investigate at the end of each day (K).")
    ] = 100,
    label_delay: Annotated[
        float, typer.Option(help="Days until every other transaction's label arrives (D).")
    ] = 7.0,
    no_labels: Annotated[
        bool, typer.Option("--no-labels", help="No labels at all: the unsupervised path alone.")
    ] = False,
    k: Annotated[int, typer.Option(help="Cards per day for card precision@k.")] = 100,
    scores_out: Annotated[
        Path | None, typer.Option(help="CSV of transaction_id,score,decision for every row.")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="JSON report.")] = None,
    limit: Annotated[int | None, typer.Option(help="Read at most this many rows.")] = None,
    save_model: Annotated[
        Path | None,
        typer.Option(
            "--save-model",
            help="After the replay, save the model (scorer, thresholds, counters) here, "
            "for offline analysis (see `fraudstream model-info`).",
        ),
    ] = None,
    shards: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Shards of the model step, as a detector with this many workers runs "
            "(default: what the settings run, see FRAUDSTREAM_MODEL_SHARDS).",
        ),
    ] = None,
) -> None:
    """Replay a dataset in event time through the production scoring core and measure it.

    Labels arrive as in production: at the end of each day analysts review the
    REVIEW_CAPACITY highest-scored cards, and every other transaction's label arrives
    LABEL_DELAY days later. Metrics follow the Fraud Detection Handbook: AUC ROC, average
    precision and card precision@k per test week, with already known compromised cards
    removed.
    """
    import dataclasses
    import json
    from datetime import date

    from detector.replay.datasets import read_dataset
    from detector.replay.evaluation import DEFAULT_TEST_WEEKS, LabelPolicy
    from detector.replay.evaluation import evaluate as run_evaluation
    from detector.replay.handbook import format_table
    from detector.scoring import CoreConfig

    settings = _settings()
    if save_model is not None and not save_model.parent.is_dir():
        # Fail now, not after a long replay.
        raise typer.BadParameter(
            f"directory {save_model.parent} does not exist", param_hint="--save-model"
        )
    try:
        weeks = [date.fromisoformat(w) for w in test_week] if test_week else DEFAULT_TEST_WEEKS
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--test-week") from error
    policy = LabelPolicy(
        review_capacity=review_capacity, label_delay_days=label_delay, enabled=not no_labels
    )
    config = CoreConfig.from_settings(settings).evaluation()
    if shards is not None:
        config = dataclasses.replace(config, shards=shards)
    reader = read_dataset(file, limit=limit)
    out = scores_out.open("w", newline="") if scores_out else None
    try:
        result = run_evaluation(
            reader,
            config=config,
            policy=policy,
            test_weeks=weeks,
            k=k,
            scores_out=out,
            progress=True,
        )
    finally:
        if out is not None:
            out.close()
    typer.echo(format_table(result.weeks))
    t = result.throughput
    typer.echo(
        f"scoring: {t.scoring_per_second:,.0f} transactions/s "
        f"({t.transactions:,} transactions, {t.labels:,} labels learned; "
        f"replay {t.replay_per_second:,.0f}/s)"
    )
    if report is not None:
        payload = result.report(
            dataset=str(file),
            test_weeks=[w.isoformat() for w in weeks],
            label_policy={
                "review_capacity": review_capacity,
                "label_delay_days": label_delay,
                "labels": not no_labels,
            },
            k=k,
            core=dataclasses.asdict(config),
        )
        report.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        typer.echo(f"report written to {report}")
    if save_model is not None:
        from models.persistence import save_model as write_model

        if result.model is None:
            raise typer.BadParameter("this replay kept no model to save", param_hint="--save-model")
        write_model(result.model, save_model, model_version=__version__)
        typer.echo(f"model written to {save_model}")


@app.command("model-info")
def model_info(
    path: Annotated[
        Path,
        typer.Argument(
            help="Model file written by `evaluate --save-model`.", exists=True, dir_okay=False
        ),
    ],
    header_only: Annotated[
        bool, typer.Option("--header-only", help="Read the header alone; unpickle nothing.")
    ] = False,
) -> None:
    """Describe a saved model: its header and, if this installation can load it, what it learned.

    Loading unpickles the file, and unpickling runs code: inspect only files you trust
    (use --header-only otherwise). Files saved with another River or fraudstream version
    are not loaded.
    """
    import river

    from detector.scoring import ModelState
    from models import HybridScorer
    from models.persistence import IncompatibleModelError, load_model, read_header

    try:
        header = read_header(path)
    except IncompatibleModelError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from error
    typer.echo(
        f"class: {header.object_class}\n"
        f"fraudstream version: {header.model_version} (this is {__version__})\n"
        f"river version: {header.river_version} (installed {river.__version__})\n"
        f"python version: {header.python_version}\n"
        f"saved at: {header.saved_at.isoformat()}"
    )
    if header_only:
        return
    try:
        obj = load_model(path, model_version=__version__)
    except IncompatibleModelError as error:
        typer.echo(f"not loadable here: {error}")
        return
    scorer = obj.scorer if isinstance(obj, ModelState) else obj
    if isinstance(obj, ModelState):
        typer.echo(
            f"model: {obj.name} {obj.version}, {obj.transactions_scored:,} transactions "
            f"scored, labels by source {dict(obj.labels_by_source)}"
        )
    if isinstance(scorer, HybridScorer):
        typer.echo(
            f"labels learned: {scorer.labels_learned}\n"
            f"classifier weight: {scorer.classifier_weight():.3f}"
        )
    else:
        typer.echo("no HybridScorer inside")


HANDBOOK = Path("../shared/datasets/handbook/transactions-2018-04-01_2018-07-31.csv.gz")


@app.command()
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
) -> None:
    """Benchmark the streaming path through a real Kafka broker (no wall-clock limits).

    Throughput of the plain loop (consumer, ScoringCore, producer) and of the detector
    with each process count, on the same pre-loaded Handbook transactions; peak RSS per
    process; recovery store size; then the latency at --rate tx/s. With --memory: months
    of the Handbook through one detector process, RSS and state every 10 event days.
    """
    from detector.bench.infra import BenchError

    settings = _settings()
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


@app.command()
def up(
    simulate: Annotated[
        bool, typer.Option("--simulate/--no-simulate", help="Also run the simulator.")
    ] = True,
    rate: Annotated[float, typer.Option(help="Simulator transactions per second.")] = 100.0,
) -> None:
    """Run the whole local system: broker, topics, detector, API and simulator.

    A broker already reachable at the bootstrap address is reused; one started here is
    stopped on exit. Ctrl-C stops everything cleanly.
    """
    from detector.local.up import run_system

    run_system(_settings(), simulate=simulate, rate=rate)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
