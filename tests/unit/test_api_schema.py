"""Property-based tests of the whole HTTP API from its own OpenAPI document.

Schemathesis generates requests for every operation (valid ones and edge cases: long
strings, odd characters, extreme numbers) and sends them with an admin key; no answer
may be a server error, and every answer must be one the document describes (status code
and body). It runs on SQLite and PostgreSQL, with a few alerts and model
statuses in the database so that ids and models sometimes exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api import review
from api.main import create_app
from detector.settings import ApiSettings, LocalSettings, Settings
from tests.unit.test_api import make_alert, make_status

ADMIN = "admin-key-0123456789abcdef"
# schemathesis 3 and its jsonschema use APIs that newer versions deprecate: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def served_app(database_url: str, tmp_path: Path) -> Iterator[FastAPI]:
    """The app with its lifespan running (schemathesis' own clients do not run it)."""
    app = create_app(
        Settings(
            local=LocalSettings(home=tmp_path),
            api=ApiSettings(database_url=database_url, api_keys=SecretStr(f"admin:{ADMIN}")),
        ),
        kafka=False,
    )
    with TestClient(app):
        with app.state.sessions() as session:
            for n in range(3):
                review.ingest_alert(
                    review.Context(session), alert=make_alert(n, card=f"card-{n % 2}")
                )
            review.ingest_status(
                review.Context(session), status=make_status("logreg", deciding=True)
            )
        yield app


@pytest.fixture
def api_schema(served_app: FastAPI) -> Any:
    # FastAPI writes OpenAPI 3.1, which schemathesis 3 supports behind this switch.
    schemathesis.experimental.OPEN_API_3_1.enable()
    return schemathesis.from_asgi("/openapi.json", served_app)


schema = schemathesis.from_pytest_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same requests on every run: a failure is reproducible
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_request_is_a_server_error(case: Any) -> None:
    response = case.call_asgi(headers={"X-API-Key": ADMIN})
    case.validate_response(
        response, checks=(not_a_server_error, response_schema_conformance, status_code_conformance)
    )
