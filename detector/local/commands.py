"""``fraudstream broker``, ``topics`` and ``up``: the commands of the local system."""

from __future__ import annotations

from typing import Annotated

import typer

from detector.cli_settings import command_settings

broker_app = typer.Typer(
    help="The local Apache Kafka broker (KRaft, one node).", no_args_is_help=True
)
topics_app = typer.Typer(help="Kafka topics of fraudstream.", no_args_is_help=True)


@broker_app.command("start")
def broker_start(
    wait: Annotated[float, typer.Option(help="Seconds to wait for the broker to be ready.")] = 90,
) -> None:
    """Start the local broker, or reuse one already reachable at the bootstrap address.

    The first start fetches the Kafka jars from Maven Central into FRAUDSTREAM_HOME.
    """
    from detector.local.broker import LocalBroker

    broker = LocalBroker.from_settings(command_settings())
    started = broker.start(wait=wait)
    typer.echo(f"broker {'started' if started else 'already running'} at {broker.bootstrap}")


@broker_app.command("fetch")
def broker_fetch() -> None:
    """Fetch the Apache Kafka jars from Maven Central into the cache (once)."""
    from detector.local.broker import LocalBroker

    libs = LocalBroker.from_settings(command_settings()).fetch_jars()
    typer.echo(f"Kafka jars in {libs}")


@broker_app.command("stop")
def broker_stop() -> None:
    """Stop the local broker that fraudstream started (a clean shutdown)."""
    from detector.local.broker import LocalBroker

    stopped = LocalBroker.from_settings(command_settings()).stop()
    typer.echo("broker stopped" if stopped else "no broker of ours was running")


@broker_app.command("status")
def broker_status() -> None:
    """Say whether a broker is reachable and whether fraudstream manages it."""
    from detector.local.broker import LocalBroker

    status = LocalBroker.from_settings(command_settings()).status()
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

    settings = command_settings()
    for topic, outcome in create_topics(settings, partitions=partitions).items():
        typer.echo(f"{topic}: {outcome}")


def up(
    simulate: Annotated[
        bool, typer.Option("--simulate/--no-simulate", help="Also run the simulator.")
    ] = True,
    # detector.local.up.SIMULATOR_RATE (not imported here: commands import lazily)
    rate: Annotated[float, typer.Option(help="Simulator transactions per second.")] = 1.0,
    attack: Annotated[
        bool,
        typer.Option(
            "--attack/--no-attack",
            help="Plant an attack in the simulated traffic: a burst at terminal term-0 about "
            "2 minutes in, and amounts tripled for two simulated hours from about 20 minutes in "
            "(at the default rate).",
        ),
    ] = True,
) -> None:
    """Run the whole local system: broker, topics, detector, API and simulator.

    A broker already reachable at the bootstrap address is reused; one started here is
    stopped on exit. Ctrl-C stops everything cleanly. Only one `up` runs per
    FRAUDSTREAM_HOME: a second one names the first and exits with code 1.
    """
    from detector.local.broker_config import BrokerError
    from detector.local.running import AlreadyRunningError
    from detector.local.topics import KafkaAdminError
    from detector.local.up import run_system

    try:
        run_system(command_settings(), simulate=simulate, rate=rate, attack=attack)
    except AlreadyRunningError as error:
        typer.echo(f"fraudstream up: {error}", err=True)
        raise typer.Exit(1) from None
    except (BrokerError, KafkaAdminError) as error:
        typer.echo(f"fraudstream up: {error}", err=True)
        raise typer.Exit(1) from None


def tail(
    topic: Annotated[
        str, typer.Argument(help="Topic to read, e.g. alerts, decisions, transactions.dlq.")
    ],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest record, not the end.")
    ] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after this many records.")] = None,
    idle_seconds: Annotated[
        float | None,
        typer.Option(min=0, help="Stop once no record came for this many seconds."),
    ] = None,
) -> None:
    """Print a topic's records as they arrive, one JSON line each (Ctrl-C stops).

    Reads every partition without committing offsets (no consumer group is changed).
    A record that is not JSON is printed as a JSON string.
    """
    from detector.local.tail import tail_topic
    from detector.local.topics import BrokerUnavailableError, wait_for_broker

    settings = command_settings()
    try:
        wait_for_broker(settings, timeout=5)
    except BrokerUnavailableError as error:
        typer.echo(f"fraudstream tail: {error}", err=True)
        raise typer.Exit(1) from None
    try:
        tail_topic(
            settings,
            topic,
            from_beginning=from_beginning,
            limit=limit,
            idle_seconds=idle_seconds,
            out=lambda line: typer.echo(line),
        )
    except LookupError as error:
        typer.echo(f"fraudstream tail: {error}", err=True)
        raise typer.Exit(1) from None
