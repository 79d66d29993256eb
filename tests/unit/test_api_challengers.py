"""Challengers over HTTP: start, retire and roll back, as controls in the outbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from detector.contracts import CheckpointInfo, Control, HyperParameters, ModelSpec
from tests.unit.test_api import ADMIN, ANALYST, VIEWER, as_, ingest, make_status, outbox

CHECKPOINT = CheckpointInfo(
    checkpoint_id="1-1000",
    saved_at=datetime(2025, 3, 1, 11, tzinfo=UTC),
    labels_learned=1000,
    model_version="0.1.0+0123abcd.1",
)


def two_models(app: FastAPI) -> None:
    tree = make_status("tree", deciding=False).model_copy(
        update={
            "checkpoints": [CHECKPOINT],
            "spec": ModelSpec(name="tree", kind="tree", params=HyperParameters(grace_period=50)),
        }
    )
    ingest(app, statuses=(make_status("logreg", deciding=True), tree))


def sent(app: FastAPI) -> Control:
    [row] = outbox(app)
    assert (row.topic, row.key) == ("control", "model")
    return Control.model_validate_json(row.value)


def test_a_challenger_is_started(app: FastAPI, client: TestClient) -> None:
    body = {"name": "forest-small", "kind": "forest", "params": {"n_models": 3, "seed": 7}}
    response = client.post("/api/models", json=body, headers=as_(ADMIN))
    assert response.status_code == 202, response.text
    assert response.json()["action"] == "add_model"
    control = sent(app)
    assert control.action == "add_model" and control.requested_by == "ada"
    assert control.model_spec == ModelSpec(
        name="forest-small", kind="forest", params=HyperParameters(n_models=3, seed=7)
    )
    history = client.get("/api/control/history", headers=as_(ADMIN)).json()
    assert history[0]["action"] == "add_model"
    assert history[0]["details"]["model_spec"]["params"]["n_models"] == 3


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "x", "kind": "svm"}, "kind"),
        ({"name": "Has Spaces", "kind": "tree"}, "name"),
        ({"name": "x", "kind": "tree", "params": {"learning_rate": 0.1}}, "tree takes no"),
        ({"name": "x", "kind": "forest", "params": {"n_models": 500}}, "n_models"),
        ({"name": "x", "kind": "logreg", "params": {"l2": -1}}, "l2"),
        ({"name": "x", "kind": "logreg", "params": {"pickle": "gASV"}}, "pickle"),
        ({"name": "x", "kind": "tree", "params": {"grace_period": "soon"}}, "grace_period"),
        ({"kind": "tree"}, "name"),
    ],
)
def test_bad_challengers_are_422(
    app: FastAPI, client: TestClient, body: dict[str, Any], message: str
) -> None:
    response = client.post("/api/models", json=body, headers=as_(ADMIN))
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], str) and message in response.json()["detail"]
    assert outbox(app) == []


def test_a_name_in_use_is_409(app: FastAPI, client: TestClient) -> None:
    two_models(app)
    response = client.post("/api/models", json={"name": "tree", "kind": "tree"}, headers=as_(ADMIN))
    assert response.status_code == 409 and "runs already" in response.json()["detail"]
    assert outbox(app) == []


def test_a_challenger_is_retired_and_its_status_forgotten(app: FastAPI, client: TestClient) -> None:
    two_models(app)
    response = client.delete("/api/models/tree", headers=as_(ADMIN))
    assert response.status_code == 202
    control = sent(app)
    assert (control.action, control.model_name) == ("retire_model", "tree")
    names = [
        m["status"]["model_name"] for m in client.get("/api/models", headers=as_(VIEWER)).json()
    ]
    assert names == ["logreg"]


def test_a_status_sent_before_a_retirement_does_not_bring_the_model_back(
    app: FastAPI, client: TestClient
) -> None:
    two_models(app)
    assert client.delete("/api/models/tree", headers=as_(ADMIN)).status_code == 202
    retired_at = sent(app).requested_at
    late = make_status("tree", deciding=False, at=retired_at - timedelta(seconds=1))
    ingest(app, statuses=(late,))

    def names() -> list[str]:
        models = client.get("/api/models", headers=as_(VIEWER)).json()
        return [m["status"]["model_name"] for m in models]

    assert names() == ["logreg"]
    # started again under the same name: its new statuses count
    ingest(
        app, statuses=(make_status("tree", deciding=False, at=retired_at + timedelta(seconds=1)),)
    )
    assert names() == ["logreg", "tree"]


def test_the_deciding_model_and_unknown_models_cannot_be_retired(
    app: FastAPI, client: TestClient
) -> None:
    two_models(app)
    deciding = client.delete("/api/models/logreg", headers=as_(ADMIN))
    assert deciding.status_code == 409 and "deciding model" in deciding.json()["detail"]
    unknown = client.delete("/api/models/nope", headers=as_(ADMIN))
    assert unknown.status_code == 404
    assert outbox(app) == []


def test_a_model_is_rolled_back_to_a_listed_checkpoint(app: FastAPI, client: TestClient) -> None:
    two_models(app)
    listed = client.get("/api/models/tree", headers=as_(VIEWER)).json()["status"]
    assert listed["checkpoints"][0]["checkpoint_id"] == "1-1000"
    assert listed["spec"]["params"]["grace_period"] == 50
    response = client.post(
        "/api/models/tree/rollback", json={"checkpoint_id": "1-1000"}, headers=as_(ADMIN)
    )
    assert response.status_code == 202
    control = sent(app)
    assert (control.action, control.model_name, control.checkpoint_id) == (
        "rollback_model", "tree", "1-1000",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("model", "body", "code", "message"),
    [
        ("tree", {"checkpoint_id": "1-2000"}, 422, "its checkpoints are 1-1000"),
        ("logreg", {"checkpoint_id": "1-1000"}, 422, "its checkpoints are none yet"),
        ("nope", {"checkpoint_id": "1-1000"}, 404, "nope"),
        ("tree", {"checkpoint_id": "../../etc/passwd"}, 422, "checkpoint_id"),
        ("tree", {}, 422, "checkpoint_id"),
        ("tree", {"checkpoint_id": "1-1000", "path": "/tmp/x.model"}, 422, "path"),
    ],
)
def test_bad_roll_backs_are_refused(
    app: FastAPI,
    client: TestClient,
    model: str,
    body: dict[str, Any],
    code: int,
    message: str,
) -> None:
    two_models(app)
    response = client.post(f"/api/models/{model}/rollback", json=body, headers=as_(ADMIN))
    assert response.status_code == code and message in response.json()["detail"]
    assert outbox(app) == []


def test_only_admins_change_models(app: FastAPI, client: TestClient) -> None:
    two_models(app)
    for key in (VIEWER, ANALYST):
        calls = [
            client.post("/api/models", json={"name": "x", "kind": "tree"}, headers=as_(key)),
            client.delete("/api/models/tree", headers=as_(key)),
            client.post(
                "/api/models/tree/rollback", json={"checkpoint_id": "1-1000"}, headers=as_(key)
            ),
        ]
        assert [c.status_code for c in calls] == [403, 403, 403]
    assert outbox(app) == []
