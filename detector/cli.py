"""The ``fraudstream`` command line.

The service commands are here: ``detect`` runs the dataflow, ``api`` the review service
(imported when the command runs, as ``api`` sits above ``detector``), ``keys`` and
``db`` serve the review service. The local system's commands come from
``detector.local.commands``, the replays' from ``detector.replay.commands`` and the
benchmark's from ``detector.bench.command``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from detector import __version__
from detector.bench import command as bench_command
from detector.cli_settings import command_settings
from detector.local import commands as local_commands
from detector.replay import commands as replay_commands

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
keys_app = typer.Typer(help="API keys of the review service.", no_args_is_help=True)
db_app = typer.Typer(help="The review service's database.", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the fraudstream version."""
    typer.echo(__version__)


@app.command()
def detect() -> None:
    """Run the detector: the Bytewax dataflow that scores transactions from Kafka.

    State and Kafka offsets are snapshotted to FRAUDSTREAM_RECOVERY_DIR, so a restart
    resumes where the last snapshot left off.
    """
    from detector.dataflow import run

    run(command_settings())


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

    settings = command_settings()
    try:
        application = create_app(settings, kafka=kafka)
    except KeyConfigError as error:
        raise typer.BadParameter(str(error), param_hint="FRAUDSTREAM_API_KEYS") from error
    except KafkaConfigError as error:
        typer.echo(f"fraudstream api: {error}", err=True)
        raise typer.Exit(2) from None
    uvicorn.run(
        application,
        host=host or settings.api.api_host,
        port=port or settings.api.api_port,
        log_level=settings.logs.log_level.lower(),
        # Our own request log leaves out query strings: the page may be opened with ?key=.
        access_log=False,
    )


@keys_app.command("new")
def keys_new(
    role: Annotated[
        str,
        typer.Option(
            help="viewer (read), analyst (claim and decide), admin (models) or scorer "
            "(POST /api/score only)."
        ),
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


@keys_app.command("url")
def keys_url() -> None:
    """Print the page address, signed in with the local admin key, of the running `fraudstream up`.

    `fraudstream up` keeps it in FRAUDSTREAM_HOME (`up.json`, readable by its owner alone)
    while it runs. Exit code 1 when no `fraudstream up` runs on this home.
    """
    from detector.local.running import read_record

    settings = command_settings()
    record = read_record(settings.local.home)
    if record is None:
        typer.echo(f"fraudstream: no `fraudstream up` runs in {settings.local.home}", err=True)
        raise typer.Exit(1)
    if record.admin_url is None:
        typer.echo(f"{record.page}\n(the keys are yours: FRAUDSTREAM_API_KEYS or _FILE)")
        return
    typer.echo(record.admin_url)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the review database to the latest schema (the API also does so on start)."""
    from sqlalchemy.engine import make_url

    from api.db import upgrade

    settings = command_settings()
    upgrade(settings.database)
    shown = make_url(settings.database).render_as_string(hide_password=True)
    typer.echo(f"database {shown} is at the latest schema")


# In the order `fraudstream --help` lists them: commands first, then the groups.
app.command()(replay_commands.simulate)
app.command()(replay_commands.replay)
app.command()(replay_commands.evaluate)
app.command("model-info")(replay_commands.model_info)
app.command()(bench_command.bench)
app.command()(local_commands.up)
app.command()(local_commands.tail)
app.add_typer(local_commands.broker_app, name="broker")
app.add_typer(local_commands.topics_app, name="topics")
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
