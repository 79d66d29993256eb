"""The review service refuses to start on a bad FRAUDSTREAM_KAFKA_EXTRA_CONFIG, in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from api.kafka_options import ENV_VAR, KafkaConfigError
from api.main import create_app
from detector.settings import KafkaSettings, LocalSettings, Settings


def test_create_app_refuses_a_bad_extra_config(tmp_path: Path) -> None:
    settings = Settings(
        local=LocalSettings(home=tmp_path),
        kafka=KafkaSettings(kafka_extra_config={"sasl.jaas.config": "x"}),
    )
    with pytest.raises(KafkaConfigError, match=r"sasl\.jaas\.config"):
        create_app(settings)
    # Without the Kafka bridge the extra config is never used, so it is not in the way.
    create_app(settings, kafka=False)


def test_fraudstream_api_prints_one_line_and_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from detector import cli

    served: list[Any] = []
    monkeypatch.setattr("uvicorn.run", lambda *args, **kwargs: served.append(args))
    result = CliRunner().invoke(
        cli.app,
        ["api"],
        env={
            "FRAUDSTREAM_HOME": str(tmp_path),
            ENV_VAR: '{"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", '
            '"sasl.username": "u", "sasl.password": "p", "sasl.jaas.config": "x"}',
            "NO_COLOR": "1",
            "COLUMNS": "300",
        },
    )
    assert result.exit_code == 2 and not served
    output = result.output
    assert "Traceback" not in output
    assert f"{ENV_VAR}: unknown property 'sasl.jaas.config'" in output
