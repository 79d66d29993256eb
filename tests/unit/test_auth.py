"""API keys: parsing, digests, roles, and a key needed on every /api route."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import fastapi.routing
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.auth import (
    KeyConfigError,
    KeyRing,
    Principal,
    Role,
    configured_entries,
    default_name,
    digest,
    new_key,
    parse_entry,
)
from api.main import create_app
from detector.settings import ApiSettings, LocalSettings, Settings

ADMIN = "admin-key-0123456789abcdef"
VIEWER = "viewer-key-0123456789abcdef"
OPEN_PATHS = {
    "/health",
    "/metrics",
    "/",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
}


def test_roles_are_ordered() -> None:
    assert Role.viewer < Role.analyst < Role.admin


def test_parse_role_key_and_role_name_key() -> None:
    assert parse_entry("admin:" + ADMIN, "x") == (
        Role.admin,
        default_name(Role.admin, ADMIN),
        ADMIN,
    )
    assert parse_entry(" analyst : ann : " + ADMIN, "x") == (Role.analyst, "ann", ADMIN)
    # A key may contain ':' when the name is given.
    assert parse_entry("viewer:v:abc:def0123456789xyz", "x")[2] == "abc:def0123456789xyz"


def test_default_name_is_role_and_digest_prefix() -> None:
    assert default_name(Role.viewer, VIEWER) == f"viewer-{digest(VIEWER).hex()[:8]}"


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("nokey", "role:key"),
        ("root:" + ADMIN, "unknown role"),
        ("admin:short", "at least 16"),
        ("admin::" + ADMIN, "name"),
        ("admin:" + "n" * 65 + ":" + ADMIN, "name"),
    ],
)
def test_bad_entries_are_refused_without_showing_the_key(entry: str, fragment: str) -> None:
    with pytest.raises(KeyConfigError) as caught:
        parse_entry(entry, "FRAUDSTREAM_API_KEYS, entry 1")
    message = str(caught.value)
    assert fragment in message and "entry 1" in message
    assert ADMIN not in message


def test_keys_from_settings_and_file(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# the team\nanalyst:ann:{'a' * 20}  # Ann\n\nviewer:{'v' * 20}\n")
    settings = Settings(
        api=ApiSettings(api_keys=SecretStr(f"admin:{ADMIN}"), api_keys_file=keys_file)
    )
    entries = configured_entries(settings)
    assert [(role, name) for role, name, _ in entries] == [
        (Role.admin, default_name(Role.admin, ADMIN)),
        (Role.analyst, "ann"),
        (Role.viewer, default_name(Role.viewer, "v" * 20)),
    ]
    ring = KeyRing.from_settings(settings)
    assert len(ring) == 3 and ring.count(Role.analyst) == 1
    assert ring.authenticate("a" * 20) == Principal("ann", Role.analyst)


def test_missing_keys_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyConfigError, match="cannot read the API keys file"):
        configured_entries(Settings(api=ApiSettings(api_keys_file=tmp_path / "nope")))


def test_bad_keys_fail_app_creation(tmp_path: Path) -> None:
    with pytest.raises(KeyConfigError):
        create_app(
            Settings(
                local=LocalSettings(home=tmp_path),
                api=ApiSettings(api_keys=SecretStr("boss:" + ADMIN)),
            ),
            kafka=False,
        )


def test_keyring_keeps_digests_only() -> None:
    ring = KeyRing([(Role.admin, "ada", ADMIN)])
    assert ring.authenticate(ADMIN) == Principal("ada", Role.admin)
    assert ring.authenticate(ADMIN + "x") is None
    assert ring.authenticate("") is None and ring.authenticate(None) is None
    assert ADMIN not in repr(vars(ring))


def test_new_keys_are_random_and_usable() -> None:
    keys = {new_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert re.fullmatch(r"[A-Za-z0-9_-]{40,}", key)
        parse_entry(f"admin:{key}", "x")


# --- every /api route needs a key ------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    keys = SecretStr(f"admin:{ADMIN},viewer:{VIEWER}")
    return create_app(
        Settings(local=LocalSettings(home=tmp_path), api=ApiSettings(api_keys=keys)), kafka=False
    )


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def route_table(app: FastAPI) -> list[tuple[str, set[str]]]:
    """(path template, methods) of every route the app serves, included routers flattened
    (newer FastAPI keeps an included router as one entry of ``app.routes``)."""
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    routes = flatten(app.routes) if flatten is not None else app.routes
    table = [(route.path, set(getattr(route, "methods", None) or ())) for route in routes]
    assert all(path for path, _ in table), table
    return table


def api_operations(app: FastAPI) -> list[tuple[str, str]]:
    """(method, concrete path) of every route under /api; fails if there are none."""
    operations = [
        (method, re.sub(r"\{[^}]+\}", "some-id", path))
        for path, methods in route_table(app)
        if path.startswith("/api")
        for method in sorted(methods)
    ]
    assert len(operations) >= 14, operations
    return operations


def test_the_route_table_is_covered(app: FastAPI) -> None:
    # Every route is either under /api (and checked below) or known to be open.
    paths = {path for path, _ in route_table(app)}
    assert paths - OPEN_PATHS - {"/static"} == {p for p in paths if p.startswith("/api/")}
    assert ("/api/models/thresholds", {"PUT"}) in route_table(app)


@pytest.mark.parametrize("key", [None, "", "wrong-key-0123456789abc", ADMIN + " ", ADMIN[:-1]])
def test_every_api_route_answers_401_without_a_valid_key(
    app: FastAPI, client: TestClient, key: str | None
) -> None:
    headers = {"Content-Type": "application/json"} | ({} if key is None else {"X-API-Key": key})
    # A malformed body too: the key is checked before the body is read.
    for body in (b"{}", b'{"label": ', b"[1, 2]"):
        for method, path in api_operations(app):
            response = client.request(method, path, headers=headers, content=body)
            assert response.status_code == 401, (method, path, body, response.text)
            assert response.headers["www-authenticate"] == "APIKey"
            assert isinstance(response.json()["detail"], str)


def test_a_valid_key_gets_past_authentication_everywhere(app: FastAPI, client: TestClient) -> None:
    for method, path in api_operations(app):
        response = client.request(method, path, headers={"X-API-Key": ADMIN}, json={})
        assert response.status_code not in (401, 403, 500), (method, path, response.text)


def test_open_routes_need_no_key(client: TestClient) -> None:
    for path in ("/health", "/metrics", "/", "/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_viewer_is_forbidden_to_change_anything(app: FastAPI, client: TestClient) -> None:
    for method, path in api_operations(app):
        if method == "GET" and not path.startswith("/api/control"):
            continue
        response = client.request(method, path, headers={"X-API-Key": VIEWER}, json={})
        assert response.status_code == 403, (method, path)
        assert "role" in response.json()["detail"]


# --- keys on the command line and for `fraudstream up` ---------------------------------------


def test_keys_new_prints_a_key_and_its_env_line() -> None:
    from typer.testing import CliRunner

    from detector.cli import app as cli

    result = CliRunner().invoke(cli, ["keys", "new", "--role", "admin", "--name", "ops"])
    assert result.exit_code == 0, result.output
    key = re.search(r"key: (\S+)", result.output)
    assert key is not None
    assert f"FRAUDSTREAM_API_KEYS=admin:ops:{key.group(1)}" in result.output
    ring = KeyRing.from_settings(
        Settings(api=ApiSettings(api_keys=SecretStr(f"admin:ops:{key.group(1)}")))
    )
    assert ring.authenticate(key.group(1)) == Principal("ops", Role.admin)

    refused = CliRunner().invoke(cli, ["keys", "new", "--role", "root"])
    assert refused.exit_code != 0 and "unknown role" in refused.output


def test_up_makes_local_keys_only_when_none_is_configured(tmp_path: Path) -> None:
    from detector.local.up import local_keys, page_url

    keys = local_keys(Settings())
    assert keys is not None and keys.admin != keys.analyst
    ring = KeyRing.from_settings(Settings(api=ApiSettings(api_keys=SecretStr(keys.env_value))))
    assert ring.authenticate(keys.admin) == Principal("local-admin", Role.admin)
    assert ring.authenticate(keys.analyst) == Principal("local-analyst", Role.analyst)
    assert local_keys(Settings(api=ApiSettings(api_keys=SecretStr(f"admin:{ADMIN}")))) is None
    assert local_keys(Settings(api=ApiSettings(api_keys_file=tmp_path / "keys"))) is None

    settings = Settings(api=ApiSettings(api_host="0.0.0.0", api_port=8123))
    assert page_url(settings, "k") == "http://127.0.0.1:8123/?key=k"
    assert page_url(Settings(api=ApiSettings(api_host="::1", api_port=80))) == "http://[::1]:80/"
