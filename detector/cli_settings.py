"""The settings of one run of the command line, shared by every command.

Read from the FRAUDSTREAM_* environment, with the logs configured as they say and the
Kafka client configuration checked before a command does anything.
"""

from __future__ import annotations

import typer

from detector.local.logs import configure_logging
from detector.settings import Settings


def command_settings() -> Settings:
    """This run's settings; exit 2 with one line if the Kafka config weakens producers."""
    from detector.kafka_config import check_durability

    settings = Settings()
    configure_logging(settings.logs.log_level, settings.logs.log_format)
    try:
        check_durability(settings.kafka.kafka_extra_config)
    except ValueError as error:
        typer.echo(f"fraudstream: {error}", err=True)
        raise typer.Exit(2) from None
    return settings
