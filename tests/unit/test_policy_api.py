"""Rules, lists and mode over HTTP: admin only, checked (422 and nothing changes), audited
in the control history, queued for the detector, and read back from the history."""

from __future__ import annotations

import json
from datetime import timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient

from detector.contracts import Control
from tests.unit.test_api import ADMIN, ANALYST, T0, as_, outbox

RULE = {"expression": "amount > 2000.0 && card_new_terminal == 1.0", "outcome": "block"}


def controls(app: FastAPI) -> list[Control]:
    return [Control.model_validate_json(r.value) for r in outbox(app)]


def test_a_rule_is_put_read_back_and_deleted(app: FastAPI, client: TestClient) -> None:
    put = client.put("/api/rules/big-new-terminal", json=RULE, headers=as_(ADMIN))
    assert put.status_code == 202, put.text
    assert put.json()["action"] == "put_rule"
    [sent] = controls(app)
    assert sent.rule is not None and sent.rule.name == "big-new-terminal"
    assert (sent.rule.changed_by, sent.requested_by) == ("ada", "ada")
    got = client.get("/api/rules/big-new-terminal", headers=as_(ADMIN)).json()
    assert (got["expression"], got["outcome"], got["mode"]) == (
        RULE["expression"],
        "block",
        "active",
    )
    assert [r["name"] for r in client.get("/api/rules", headers=as_(ADMIN)).json()] == [
        "big-new-terminal"
    ]
    history = client.get("/api/control/history", headers=as_(ADMIN)).json()
    assert history[0]["action"] == "put_rule" and history[0]["actor"] == "ada"

    assert client.delete("/api/rules/big-new-terminal", headers=as_(ADMIN)).status_code == 202
    assert client.get("/api/rules/big-new-terminal", headers=as_(ADMIN)).status_code == 404
    assert client.delete("/api/rules/big-new-terminal", headers=as_(ADMIN)).status_code == 404
    assert [c.action for c in controls(app)] == ["put_rule", "delete_rule"]


def test_bad_input_is_refused_and_changes_nothing(app: FastAPI, client: TestClient) -> None:
    bad = client.put(
        "/api/rules/broken", json={**RULE, "expression": "amount > 2000.0 &&"}, headers=as_(ADMIN)
    )
    assert bad.status_code == 422
    assert "invalid expression" in bad.json()["detail"] and ":1:19" in bad.json()["detail"]
    unknown = client.put(
        "/api/rules/typo", json={**RULE, "expression": "amout > 1.0"}, headers=as_(ADMIN)
    )
    assert unknown.status_code == 422 and "unknown variable amout" in unknown.json()["detail"]
    past = (T0 - timedelta(days=1)).isoformat()
    expired = client.put(
        "/api/lists/block.card_id/card-17", json={"expires_at": past}, headers=as_(ADMIN)
    )
    assert expired.status_code == 422 and "not in the future" in expired.json()["detail"]
    no_list = client.put("/api/lists/block.iban/x", json={}, headers=as_(ADMIN))
    assert no_list.status_code == 422 and "block.card_id" in json.dumps(no_list.json())
    long = client.put(f"/api/lists/block.card_id/{'x' * 129}", json={}, headers=as_(ADMIN))
    assert long.status_code == 422
    for value, message in (("%20", "spaces"), ("%20x", "spaces"), ("fr", "two capital")):
        odd = client.put(f"/api/lists/block.country/{value}", json={}, headers=as_(ADMIN))
        assert odd.status_code == 422 and message in odd.json()["detail"], odd.text
    bad_name = client.put("/api/rules/Bad Name", json=RULE, headers=as_(ADMIN))
    assert bad_name.status_code == 422
    bad_mode = client.put("/api/mode", json={"mode": "panic"}, headers=as_(ADMIN))
    assert bad_mode.status_code == 422
    analyst = client.put("/api/rules/ok", json=RULE, headers=as_(ANALYST))
    assert analyst.status_code == 403
    assert outbox(app) == []
    assert client.get("/api/policy", headers=as_(ADMIN)).json()["rules"] == []


def test_lists_and_mode(app: FastAPI, client: TestClient) -> None:
    until = (T0 + timedelta(days=30)).isoformat()
    body = {"expires_at": until, "note": "chargeback ring"}
    put = client.put("/api/lists/block.card_id/card-17", json=body, headers=as_(ADMIN))
    assert put.status_code == 202, put.text
    entry = client.get("/api/lists/block.card_id/card-17", headers=as_(ADMIN)).json()
    assert (entry["value"], entry["note"], entry["changed_by"]) == (
        "card-17",
        "chargeback ring",
        "ada",
    )
    assert client.get("/api/lists/allow.card_id/card-17", headers=as_(ADMIN)).status_code == 404
    assert client.put("/api/mode", json={"mode": "monitor"}, headers=as_(ADMIN)).status_code == 202
    policy = client.get("/api/policy", headers=as_(ADMIN)).json()
    assert policy["mode"] == "monitor"
    assert [e["value"] for e in policy["lists"]["block.card_id"]] == ["card-17"]
    assert client.get("/api/mode", headers=as_(ADMIN)).json() == {"mode": "monitor"}
    # An entry past its expiry is no longer in force.
    app.state.clock.now = T0 + timedelta(days=31)
    assert client.get("/api/lists/block.card_id", headers=as_(ADMIN)).json() == []
    app.state.clock.now = T0 + timedelta(hours=2)
    gone = client.delete("/api/lists/block.card_id/card-17", headers=as_(ADMIN))
    assert gone.status_code == 202
    assert client.get("/api/lists/block.card_id", headers=as_(ADMIN)).json() == []
    assert [c.action for c in controls(app)] == ["put_list_entry", "set_mode", "delete_list_entry"]
