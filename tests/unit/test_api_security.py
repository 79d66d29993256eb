"""The review service's hardening: hostile paths, and the Content-Security-Policy the page
keeps to (the page itself runs under it in tests/integration/test_web.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
from collections.abc import Iterator, MutableMapping
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.main import CONTENT_SECURITY_POLICY, WEB, WebFiles, _loggable, create_app
from detector.settings import ApiSettings, LocalSettings, Settings

VIEWER = "viewer-key-0123456789abcdef"


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    return create_app(
        Settings(
            local=LocalSettings(home=tmp_path),
            api=ApiSettings(api_keys=SecretStr(f"viewer:vic:{VIEWER}")),
        ),
        kafka=False,
    )


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    # Server errors come back as responses (500), as a browser would see them.
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def directives(policy: str) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *sources = part.split()
        assert name not in parsed, f"{name} twice"
        parsed[name] = sources
    return parsed


# --- hostile paths ---------------------------------------------------------------------------

HOSTILE_STATIC = [
    "/static/app.js%00.html",
    "/static/%00",
    "/static/app.js%00",
    "/static/%00%2f..%2fapp.js",
    "/static/..%00/app.js",
    "/static/../main.py",
    "/static/..%2fmain.py",
    "/static/..%2f..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static/....//....//etc/passwd",
    "/static/..%5cmain.py",
    "/static/%c0%ae%c0%ae/main.py",  # overlong UTF-8 for "."
    "/static/%ff%fe.js",  # not UTF-8 at all
    "/static/%ed%a0%80.js",  # an encoded UTF-16 surrogate
    "/static/" + "a" * 300,
    "/static/" + "a" * 5000 + ".js",
    "/static/" + "a/" * 2000 + "app.js",
    "/static/" + "%e2%80%ae" * 100,
    "/static/app.js%0a%0dSet-Cookie:%20x=1",
    "/static/%1b[31mred",
    "/static/%7f",
    "/static/%",
    "/static/%zz",
    "/static/nope.js",
    "/static/",
]


@pytest.mark.parametrize("path", HOSTILE_STATIC)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_hostile_static_paths_are_a_json_404(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 404, (path, response.status_code)
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"
    if method == "GET":
        assert response.json() == {"detail": "Not Found"}


@pytest.mark.parametrize(
    "path",
    [
        "/%00",
        "/index.html%00",
        "/api%00",
        "/api/%00",
        "/health%00",
        "/docs%00",
        "/" + "x" * 10_000,
        "/..%2f..%2fetc/passwd",
    ],
)
def test_hostile_paths_elsewhere_are_a_json_404(client: TestClient, path: str) -> None:
    response = client.get(path, headers={"X-API-Key": VIEWER})
    assert response.status_code == 404
    assert isinstance(response.json()["detail"], str)


@pytest.mark.parametrize(
    "path",
    [
        "/api/alerts/a%00b",
        "/api/alerts/%00/history",
        "/api/alerts/" + "x" * 5000,
        "/api/alerts/%ff%fe",
        "/api/models/%00",
        "/api/models/..%2f..%2fetc%2fpasswd",
    ],
)
def test_hostile_api_path_parameters_never_fail_the_server(client: TestClient, path: str) -> None:
    # An invalid id is the API's own business (422, or 404 for no such id): never a 500.
    response = client.get(path, headers={"X-API-Key": VIEWER})
    assert response.status_code in (404, 422), (path, response.status_code)
    assert isinstance(response.json()["detail"], str)


def test_the_page_files_are_still_served(client: TestClient) -> None:
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css"), ("favicon.svg", "svg")):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"], name


def raw_get(app: FastAPI, path: str) -> tuple[int, bytes]:
    """GET ``path`` as an ASGI server might pass it (already decoded, anything in it)."""
    messages: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogatepass"),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], body


@pytest.mark.parametrize(
    "path",
    ["/static/\udcff.js", "/static/a\x00b", "/static/\ud800", "/static/app.js\x00"],
)
def test_paths_the_file_system_cannot_take_are_a_404(client: TestClient, path: str) -> None:
    # A lone surrogate cannot even be encoded for the file system (UnicodeEncodeError).
    status, body = raw_get(client.app, path)  # type: ignore[arg-type]
    assert (status, body) == (404, b'{"detail":"Not Found"}')


def test_unreadable_or_looping_files_are_not_found(tmp_path: Path) -> None:
    folder = tmp_path / "web"
    folder.mkdir()
    (folder / "ok.js").write_text("ok")
    secret = folder / "secret.js"
    secret.write_text("secret")
    secret.chmod(0)
    (folder / "loop").symlink_to(folder / "loop")
    (folder / "out.js").symlink_to(tmp_path / "elsewhere.js")
    (tmp_path / "elsewhere.js").write_text("outside")
    files = WebFiles(directory=folder)
    assert files.lookup_path("ok.js")[1] is not None
    if os.geteuid() != 0:  # root reads anything
        assert files.lookup_path("secret.js") == ("", None)
    assert files.lookup_path("loop") == ("", None)
    assert files.lookup_path("out.js") == ("", None)
    assert files.lookup_path("a\x00b") == ("", None)
    assert files.lookup_path("\udcff") == ("", None)
    assert files.lookup_path("x" * 256) == ("", None)


# --- headers and the Content-Security-Policy -------------------------------------------------


def test_the_page_policy() -> None:
    policy = directives(CONTENT_SECURITY_POLICY)
    assert policy["default-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    # Nothing weakens default-src for scripts or styles, and nothing is inline or eval'd.
    assert not {"script-src", "style-src", "script-src-elem", "style-src-attr"} & set(policy)
    assert "unsafe" not in CONTENT_SECURITY_POLICY
    assert "data:" not in CONTENT_SECURITY_POLICY and "*" not in CONTENT_SECURITY_POLICY


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/", 200),
        ("/static/app.js", 200),
        ("/static/style.css", 200),
        ("/static/nope.js", 404),
        ("/static/app.js%00.html", 404),
        ("/health", 200),
        ("/metrics", 200),
        ("/openapi.json", 200),
        ("/api/alerts", 401),
        ("/no/such/route", 404),
    ],
)
def test_security_headers_on_every_response(client: TestClient, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"


def test_security_headers_on_errors_and_other_methods(client: TestClient) -> None:
    for response in (
        client.post("/static/app.js"),
        client.delete("/"),
        client.get("/api/alerts", headers={"X-API-Key": VIEWER}, params={"limit": 0}),
    ):
        assert response.status_code in (405, 422)
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-frame-options"] == "DENY"


class _Markup(HTMLParser):
    """What of a page a strict policy would block: inline code and styles, handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.local: list[str] = []
        self._tag = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag = tag
        values = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=...> handler")
            if name == "style":
                self.problems.append(f"<{tag} style=...> inline style")
            if value and value.strip().lower().startswith(("javascript:", "data:")):
                self.problems.append(f"<{tag} {name}={value[:20]}...>")
        if tag == "script" and not values.get("src"):
            self.problems.append("inline <script>")
        if tag == "style":
            self.problems.append("inline <style>")
        for name in ("src", "href"):
            if (link := values.get(name)) and not link.startswith("#"):
                self.local.append(link)


def test_the_page_has_no_inline_code_styles_or_handlers() -> None:
    parser = _Markup()
    parser.feed((WEB / "index.html").read_text())
    assert parser.problems == []
    # Everything it loads is this origin's.
    assert parser.local and all(link.startswith("/static/") for link in parser.local)
    for link in parser.local:
        assert (WEB / link.removeprefix("/static/")).is_file(), link


def test_the_script_writes_no_html_and_evaluates_no_strings() -> None:
    # Trusted Types are enforced: these sinks would throw in the browser.
    script = (WEB / "app.js").read_text()
    for sink in (
        r"\.innerHTML\b",
        r"\.outerHTML\b",
        r"insertAdjacentHTML",
        r"document\.write",
        r"\beval\(",
        r"new Function\(",
        r"setTimeout\(\s*[\"'`]",
        r"setInterval\(\s*[\"'`]",
        r"setAttribute\(\s*[\"']style",
        r"import\(\s*[\"'`]https?:",
    ):
        assert not re.search(sink, script), sink
    style = (WEB / "style.css").read_text()
    assert "@import" not in style and "url(" not in style


@pytest.mark.parametrize("path", ["/docs", "/docs/oauth2-redirect", "/redoc"])
def test_the_openapi_pages_have_their_own_policy(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    policy = directives(response.headers["content-security-policy"])
    assert policy["frame-ancestors"] == ["'none'"]
    assert "'unsafe-inline'" not in policy["script-src"]
    assert "'unsafe-eval'" not in policy["script-src"]
    # Exactly the page's own inline scripts are allowed, by hash.
    inline = re.findall(r"<script>(.*?)</script>", response.text, re.DOTALL)
    hashes = {
        "'sha256-" + base64.b64encode(hashlib.sha256(code.encode()).digest()).decode() + "'"
        for code in inline
    }
    assert {s for s in policy["script-src"] if s.startswith("'sha256-")} == hashes
    assert response.headers["x-frame-options"] == "DENY"


def test_the_openapi_pages_follow_the_root_path(app: FastAPI) -> None:
    with TestClient(app, root_path="/review") as client:
        page = client.get("/docs")
    assert "'/review/openapi.json'" in page.text
    assert "/review/docs/oauth2-redirect" in page.text


def test_request_log_lines_escape_and_bound_the_path() -> None:
    # The request log shows the decoded path: "%0a" must not start a forged log line.
    assert _loggable("/static/app.js") == "/static/app.js"
    assert _loggable("/api/alerts/ünïcode") == "/api/alerts/ünïcode"
    forged = _loggable("/static/x\n\x1b[2J2025-01-01 [info] forged\x00" + "y" * 1000)
    assert forged.isprintable() and "\\n" in forged and "\\x1b" in forged
    assert len(forged) <= 301
