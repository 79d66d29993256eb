"""Fixtures of the review service's route tests: its settings, the app and a client."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.main import create_app
from detector.settings import ApiSettings, DetectorSettings, LocalSettings, Settings
from tests.unit.test_api import KEYS, T0, Clock


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        local=LocalSettings(home=tmp_path),
        api=ApiSettings(database_url=database_url, api_keys=SecretStr(KEYS), claim_ttl_seconds=600),
        detector=DetectorSettings(status_interval_seconds=5),
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    app = create_app(settings, kafka=False)
    app.state.clock = Clock(T0 + timedelta(hours=1))
    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client
