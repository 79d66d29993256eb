from __future__ import annotations

from fastapi.testclient import TestClient

from api.main import create_app
from detector import __version__


def test_health() -> None:
    with TestClient(create_app()) as client:
        response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__}


def test_openapi_document_is_served() -> None:
    with TestClient(create_app()) as client:
        assert client.get("/openapi.json").json()["info"]["title"] == "fraudstream"
