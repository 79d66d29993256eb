"""``fraudstream simulate``, ``replay``, ``evaluate`` and ``model-info``: the replay commands.

``simulate`` and ``replay`` publish transactions (and chargebacks) to Kafka, or simulated
ones to a file; ``evaluate`` replays a dataset through the scoring core in event time
and measures it; ``model-info`` describes a model that ``evaluate`` saved.
"""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import structlog
import typer

from detector import __version__
from detector.cli_settings import command_settings

if TYPE_CHECKING:
    from collections.abc import Iterable

    from detector.replay.datasets import Record
    from detector.replay.publishing import PublishStats
    from detector.settings import Settings

log = structlog.get_logger("fraudstream")
# How long ``simulate`` and ``replay`` wait for the broker to answer before giving up.
BROKER_WAIT_SECONDS = 5.0


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
    attack_after_days: Annotated[
        float | None,
        typer.Option(
            help="Plant an attack this many simulated days in: many cards, small amounts, "
            "at one terminal in minutes.",
            min=0,
        ),
    ] = None,
    attack_terminal: Annotated[
        int, typer.Option(help="The attacked terminal (term-N).", min=0)
    ] = 0,
    attack_cards: Annotated[int, typer.Option(help="Cards in the attack.", min=1)] = 60,
    shift_after_days: Annotated[
        float | None,
        typer.Option(help="Multiply amounts by SHIFT_FACTOR from this simulated day on.", min=0),
    ] = None,
    shift_factor: Annotated[float, typer.Option(help="The amount shift's factor.", min=0.01)] = 3.0,
    shift_hours: Annotated[
        float | None,
        typer.Option(help="Simulated hours the amount shift lasts (default: for good).", min=0.01),
    ] = None,
) -> None:
    """Publish simulated card transactions (the Fraud Detection Handbook's simulation).

    Cards and terminals on a grid, per-card spending habits, and three fraud scenarios:
    large amounts, compromised terminals and compromised cards. Simulated time starts
    DAYS_BACK days ago, runs as fast as RATE allows and never passes the wall clock.
    """
    import itertools

    from detector.replay.datasets import write_jsonl
    from detector.replay.publishing import start_time_for_live
    from detector.replay.simulator import SimulationConfig
    from detector.replay.simulator import simulate as run_simulation

    settings = command_settings()
    seed = seed if seed is not None else random.SystemRandom().randrange(1_000_000)
    start = start_time_for_live(days_back)
    try:
        config = SimulationConfig(
            n_customers=customers,
            n_terminals=terminals,
            seed=seed,
            start=start,
            days=days,
            attack_at=(
                start + timedelta(days=attack_after_days) if attack_after_days is not None else None
            ),
            attack_terminal=attack_terminal,
            attack_cards=attack_cards,
            shift_at=(
                start + timedelta(days=shift_after_days) if shift_after_days is not None else None
            ),
            shift_factor=shift_factor,
            shift_hours=shift_hours,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    log.info("simulating", seed=seed, start=config.start.isoformat(), rate=rate)
    if config.attack_at is not None:
        log.info(
            "planted burst",
            at=config.attack_at.isoformat(),
            terminal=f"term-{config.attack_terminal}",
            cards=config.attack_cards,
        )
    if config.shift_at is not None:
        log.info(
            "planted amount shift",
            at=config.shift_at.isoformat(),
            factor=config.shift_factor,
            hours=config.shift_hours,
        )
    records = run_simulation(config)
    if out is not None:
        written = write_jsonl(itertools.islice(records, limit), out)
        typer.echo(f"{written} transactions written to {out}")
        return
    stats = _publish(
        "simulate",
        records,
        settings,
        rate=rate,
        realtime_cap=True,
        chargeback_delay=timedelta(days=chargeback_delay_days) if chargeback_delay_days else None,
        limit=limit,
        progress=False,
    )
    typer.echo(f"published {stats.transactions} transactions and {stats.labels} chargebacks")


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

    settings = command_settings()
    reader = read_dataset(file, limit=limit)
    stats = _publish(
        "replay",
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


def _publish(
    command: str, records: Iterable[Record], settings: Settings, **options: Any
) -> PublishStats:
    """``publishing.publish`` for a command: the broker checked first, Ctrl-C a clean stop,
    and a failure one line on stderr (exit code 1)."""
    from detector.local.topics import BrokerUnavailableError, wait_for_broker
    from detector.replay.publishing import PublishError, publish, stop_on_signals

    with stop_on_signals() as stop:
        try:
            # Before the first record: no progress bar runs for records never sent.
            wait_for_broker(settings, timeout=BROKER_WAIT_SECONDS)
            return publish(records, settings, stop=stop, **options)
        except (BrokerUnavailableError, PublishError) as error:
            typer.echo(f"fraudstream {command}: {error}", err=True)
            raise typer.Exit(1) from None


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
    rules: Annotated[
        Path | None,
        typer.Option(
            "--rules",
            help="YAML or JSON file of rules (name, expression, outcome) to backtest: "
            "each rule's hits and the frauds among them, before it goes live.",
            exists=True,
            dir_okay=False,
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
    import json
    from datetime import date

    from detector.replay.datasets import read_dataset
    from detector.replay.evaluation import DEFAULT_TEST_WEEKS, LabelPolicy
    from detector.replay.evaluation import evaluate as run_evaluation
    from detector.replay.handbook import format_table

    settings = command_settings()
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
    from detector.replay.backtest import Backtest, RulesFileError, load_rules, shadow_controls

    backtest = None
    if rules is not None:
        try:  # fail now, not after a long replay
            backtest = Backtest(load_rules(rules))
        except RulesFileError as error:
            raise typer.BadParameter(str(error), param_hint="--rules") from error
    config = settings.scoring.evaluation()
    if shards is not None:
        config = config.placed(shards=shards)
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
            controls=shadow_controls(list(r.rule for r in backtest.results.values()))
            if backtest
            else (),
            observe=backtest.observe if backtest else None,
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
    if result.calibration is not None:
        typer.echo(result.calibration.format())
    if backtest is not None:
        typer.echo("\nrules (backtest, in shadow):\n" + backtest.table())
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
            core={**config.model_dump(mode="json"), "shards": config.shards},
        )
        if backtest is not None:
            payload["rules"] = backtest.to_dict()
        report.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        typer.echo(f"report written to {report}")
    if save_model is not None:
        from models.persistence import save_model as write_model

        if result.model is None:
            raise typer.BadParameter("this replay kept no model to save", param_hint="--save-model")
        write_model(result.model, save_model, model_version=__version__)
        typer.echo(f"model written to {save_model}")


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
    scorer = obj.decider.scorer if isinstance(obj, ModelState) else obj
    if isinstance(obj, ModelState):
        typer.echo(
            f"model: {obj.deciding} {obj.version}, {obj.decider.transactions_scored:,} "
            f"transactions scored, labels by source {dict(obj.labels_by_source)}"
        )
    if isinstance(scorer, HybridScorer):
        typer.echo(
            f"labels learned: {scorer.labels_learned}\n"
            f"classifier weight: {scorer.classifier_weight():.3f}"
        )
    else:
        typer.echo("no HybridScorer inside")
