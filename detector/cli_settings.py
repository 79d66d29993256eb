"""The settings of one run of the command line, shared by every command.

Read from the FRAUDSTREAM_* environment, with the logs configured as they say and the
Kafka client configuration checked before a command does anything.
"""

from __future__ import annotations

import re

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

from detector.local.logs import configure_logging
from detector.settings import Settings

# Settings whose values may hold secrets: an error names them but never shows the value.
SECRET_SETTINGS = frozenset(("api_keys", "kafka_extra_config", "database_url"))


def command_settings() -> Settings:
    """This run's settings; exit 2 with one line per bad setting (naming its environment
    variable), or if the Kafka config weakens producers."""
    from detector.kafka_config import check_durability

    try:
        settings = Settings()
    except ValidationError as error:
        for line in settings_errors(error):
            typer.echo(f"fraudstream: {line}", err=True)
        raise typer.Exit(2) from None
    except SettingsError as error:  # a value that is not the JSON a list or dict needs
        field = re.search(r'field "(\w+)"', str(error))
        name = f"FRAUDSTREAM_{field[1].upper()}" if field else "a FRAUDSTREAM_* variable"
        typer.echo(f"fraudstream: {name} is invalid: not valid JSON", err=True)
        raise typer.Exit(2) from None
    configure_logging(
        settings.logs.log_level, settings.logs.log_format, requests=settings.logs.log_requests
    )
    try:
        check_durability(settings.kafka.kafka_extra_config)
    except ValueError as error:
        typer.echo(f"fraudstream: {error}", err=True)
        raise typer.Exit(2) from None
    return settings


def settings_errors(error: ValidationError) -> list[str]:
    """One line per invalid setting: its environment variable, its value and what is allowed."""
    lines = []
    for problem in error.errors(include_url=False):
        field = str(problem["loc"][0]) if problem["loc"] else None
        message = problem["msg"].removeprefix("Value error, ")
        if field is None:
            lines.append(f"invalid settings: {message}")
            continue
        name = f"FRAUDSTREAM_{field.upper()}"
        if field in SECRET_SETTINGS:
            lines.append(f"{name} is invalid: {message}")
        else:
            lines.append(f"{name}={problem['input']!r} is invalid: {message}")
    return lines
