"""The FastAPI application: assembled here, served by ``fraudstream api``.

``create_app`` builds an app from ``Settings``; its lifespan opens the database,
migrates it to the latest schema and, unless ``kafka=False`` (unit tests), starts the
Kafka bridge. Open without a key: ``/health``, ``/metrics``, the page ``/`` and
``/static``; everything under ``/api`` needs ``X-API-Key``.

Every response carries a Content-Security-Policy (``CONTENT_SECURITY_POLICY``: the page's
scripts, styles, images and requests come from this origin only, no inline code, no
framing) and its companions (``SECURITY_HEADERS``). The OpenAPI pages ``/docs`` and
``/redoc`` load their viewers from a CDN and have a policy of their own (``docs_policy``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import DBAPIError
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import live, review
from api.auth import API_KEY_HEADER, KeyRing, Role, StreamTokens, identify, keyring_of
from api.bridge import Bridge
from api.db import make_engine, session_factory, upgrade
from api.kafka_options import IGNORED, aiokafka_options
from api.metrics import UNMATCHED_ROUTE, ApiMetrics, QueueGauges
from api.routes import routers
from api.schemas import ERROR_STATUS, ErrorOut
from api.score import Scorer
from detector import __version__
from detector.settings import Settings
from detector.validation import describe_errors

log = structlog.get_logger("fraudstream.api")

WEB = Path(__file__).resolve().parent / "web"
QUIET_PATHS = frozenset({"/health", "/metrics"})
# The page (api/web: ES modules and a style sheet, no inline code) loads everything from
# this origin and builds its DOM without HTML strings, so Trusted Types can be enforced.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ]
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    # The page may be opened with ?key=...: never send that URL to another site.
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    # For browsers without CSP frame-ancestors.
    "x-frame-options": "DENY",
}
# Where FastAPI's OpenAPI viewers (Swagger UI, ReDoc) load their code, styles and images.
DOCS_CDN = "https://cdn.jsdelivr.net"
DOCS_STYLES = "https://fonts.googleapis.com"
DOCS_FONTS = "https://fonts.gstatic.com"
DOCS_IMAGES = ("https://fastapi.tiangolo.com", "https://cdn.redoc.ly")
SWAGGER_REDIRECT = "/docs/oauth2-redirect"
INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
# Longer static paths cannot name one of the page's files.
STATIC_PATH_MAX = 255


def _now() -> datetime:
    return datetime.now(UTC)


class WebFiles(StaticFiles):
    """The page's files; a path the file system cannot take is a 404, never a 500.

    Starlette's ``StaticFiles`` raises on a NUL byte (``ValueError``), a name it cannot
    encode, or an OS error other than a missing file (a loop of links, a name too long,
    no permission). Here a requested path with a control character (NUL included) or
    longer than any of the page's files is not found before the file system is asked, and
    so is any path the file system refuses, or a file that cannot be read. ``..`` cannot
    leave the folder (Starlette's own check).
    """

    async def get_response(self, path: str, scope: Scope) -> Response:
        # The path as requested, before ``get_path`` normalised "x\x00/../app.js" away.
        requested = get_route_path(scope)
        if len(requested) > STATIC_PATH_MAX or not requested.isprintable():
            raise StarletteHTTPException(status_code=404)
        return await super().get_response(path, scope)

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        if len(path) > STATIC_PATH_MAX or not path.isprintable():
            return "", None
        try:
            full_path, stat_result = super().lookup_path(path)
        except (OSError, ValueError) as error:
            log.info("static path not served", error=type(error).__name__)
            return "", None
        if full_path and not os.access(full_path, os.R_OK):
            return "", None
        return full_path, stat_result


def _sources(content: str) -> str:
    """CSP hash sources of the inline scripts of ``content``, an HTML page."""
    digests = (hashlib.sha256(code.encode()).digest() for code in INLINE_SCRIPT.findall(content))
    return " ".join(f"'sha256-{base64.b64encode(d).decode()}'" for d in digests)


def docs_policy(page: HTMLResponse) -> HTMLResponse:
    """``page`` (an OpenAPI viewer from FastAPI) with a policy of its own.

    Scripts: the CDN, and the page's inline scripts by their hashes (never any other
    inline script). Styles may be inline: both viewers write style elements at run time.
    """
    body = bytes(page.body).decode()
    page.headers["content-security-policy"] = "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self' {DOCS_CDN} {_sources(body)}".rstrip(),
            f"style-src 'self' 'unsafe-inline' {DOCS_CDN} {DOCS_STYLES}",
            f"img-src 'self' data: {' '.join(DOCS_IMAGES)}",
            f"font-src 'self' {DOCS_FONTS}",
            "worker-src 'self' blob:",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )
    return page


def _install_docs(app: FastAPI) -> None:
    """FastAPI's ``/docs``, ``/docs/oauth2-redirect`` and ``/redoc``, each with its policy."""
    openapi_url = app.openapi_url or "/openapi.json"

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return docs_policy(
            get_swagger_ui_html(
                openapi_url=root + openapi_url,
                title=f"{app.title} - Swagger UI",
                oauth2_redirect_url=root + SWAGGER_REDIRECT,
            )
        )

    async def swagger_ui_redirect(_request: Request) -> HTMLResponse:
        return docs_policy(get_swagger_ui_oauth2_redirect_html())

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_redoc_html(openapi_url=root + openapi_url, title=f"{app.title} - ReDoc")
        return docs_policy(page)

    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route(SWAGGER_REDIRECT, swagger_ui_redirect, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)


def _loggable(path: str) -> str:
    """A request path fit for a log line: bounded, control characters escaped."""
    text = path if path.isprintable() else path.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 300 else text[:300] + "…"


class ObserveRequests:
    """Counts and times every request by route template, logs it without its query
    string (which may hold ``?key=``), and adds the security headers."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if scope["path"].startswith("/api/"):
                    headers.setdefault("cache-control", "no-store")
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            seconds = time.perf_counter() - started
            route = _route_template(scope)
            self.metrics.observe_request(route, scope["method"], status_code, seconds)
            emit = log.debug if scope["path"] in QUIET_PATHS else log.info
            emit(
                "request",
                method=scope["method"],
                path=_loggable(scope["path"]),
                status=status_code,
                ms=round(seconds * 1000, 1),
            )


def _route_template(scope: Scope) -> str:
    """The matched route's template (bounded label values), not the concrete path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    if scope["path"].startswith("/static/"):
        return "/static"
    return UNMATCHED_ROUTE


def _validation_message(error: RequestValidationError) -> str:
    """One readable line per problem: ``where: what``. Every pattern of the API refuses
    control characters (``NO_CONTROL``), so a mismatch says that rather than the pattern."""
    problems = [
        {**item, "msg": "must not contain control characters"}
        if item.get("type") == "string_pattern_mismatch"
        else item
        for item in error.errors()
    ]
    return describe_errors(problems, limit=10, whole="request") or "invalid request"


def _install_error_handlers(app: FastAPI) -> None:
    """Every error is JSON ``{"detail": "..."}``; none leaks a stack trace or a key."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI validates the body before it runs the key check: a caller without a
        # valid key learns that first, not what is wrong with the body.
        if request.url.path.startswith("/api/"):
            try:
                identify(keyring_of(request), request.headers.get(API_KEY_HEADER))
            except HTTPException as refused:
                return JSONResponse(
                    {"detail": refused.detail},
                    status_code=refused.status_code,
                    headers=refused.headers,
                )
        return JSONResponse({"detail": _validation_message(error)}, status_code=422)

    @app.exception_handler(review.ReviewError)
    async def review_error(_request: Request, error: Exception) -> JSONResponse:
        if not isinstance(error, review.ReviewError):
            return JSONResponse({"detail": str(error)}, status_code=400)
        code = ERROR_STATUS[error.kind] if error.kind is not None else 400
        return JSONResponse({"detail": error.message}, status_code=code)

    @app.exception_handler(DBAPIError)
    async def database_error(_request: Request, error: Exception) -> JSONResponse:
        log.error("database error", error=f"{type(error).__name__}: {str(error)[:300]}")
        return JSONResponse({"detail": "the database is unavailable"}, status_code=503)


def _queue_reader(app: FastAPI) -> Callable[[], QueueGauges]:
    def read() -> QueueGauges:
        sessions = getattr(app.state, "sessions", None)
        if sessions is None:
            raise RuntimeError("the database is not open yet")
        with sessions() as session:
            stats = review.queue_stats(review.Context(session, clock=app.state.clock))
        return QueueGauges(
            open_alerts=stats.open,
            oldest_open_age_seconds=stats.oldest_open_age_seconds,
            outbox_pending=stats.outbox_pending,
        )

    return read


def _log_keys(keyring: KeyRing) -> None:
    if not len(keyring):
        log.warning(
            "no API key configured: every /api route answers 401; set FRAUDSTREAM_API_KEYS "
            "(see `fraudstream keys new`)"
        )
        return
    log.info(
        "API keys loaded",
        **{role.name: keyring.count(role) for role in Role},
    )


def create_app(settings: Settings | None = None, *, kafka: bool = True) -> FastAPI:
    """The review service for ``settings`` (default: from the environment).

    ``kafka=False`` leaves the bridge out: the HTTP side alone, over the database (tests).
    Invalid API key configuration fails here, before anything is served.
    """
    settings = settings if settings is not None else Settings()
    keyring = KeyRing.from_settings(settings)
    if kafka:
        # FRAUDSTREAM_KAFKA_EXTRA_CONFIG is checked here, before anything is served; the
        # bridge builds its clients' options again on each connect (renewed TLS files).
        for client in ("producer", "consumer"):
            aiokafka_options(settings.kafka.kafka_extra_config, client)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _log_keys(keyring)
        engine = make_engine(settings.database)
        await asyncio.to_thread(upgrade, engine)
        app.state.sessions = session_factory(engine)
        app.state.hub.start()
        follower = live.Follower(app.state.hub, app.state.sessions)
        await follower.start()
        bridge = Bridge(settings, app.state.sessions, app.state.metrics) if kafka else None
        app.state.bridge = bridge
        scorer = Scorer(settings, app.state.sessions, app.state.metrics) if kafka else None
        app.state.scorer = scorer
        if bridge is not None:
            await bridge.start()
        if scorer is not None:
            await scorer.start()
        extra = settings.kafka.kafka_extra_config
        log.info(
            "review service ready",
            backend=engine.dialect.name,
            kafka=kafka,
            bootstrap=settings.kafka.bootstrap_servers if kafka else None,
            # Names only: values may be secrets.
            kafka_extra_config=sorted(extra) if kafka else None,
            kafka_extra_config_ignored=sorted(set(extra) & IGNORED) if kafka else None,
        )
        try:
            yield
        finally:
            await follower.stop()
            app.state.hub.stop()
            if scorer is not None:
                await scorer.stop()
            app.state.scorer = None
            if bridge is not None:
                await bridge.stop()
            app.state.bridge = None
            engine.dispose()

    app = FastAPI(
        title="fraudstream",
        version=__version__,
        description="Alert review and model control for the fraudstream detector.\n\n"
        "Every `/api` route needs an API key in the `X-API-Key` header; roles are viewer "
        "(read), analyst (claim and decide) and admin (thresholds and the deciding model); "
        "scorer (payment systems) may only score (`POST /api/score`), as analysts and admins "
        "may. "
        'Errors are JSON `{"detail": "..."}`.',
        lifespan=lifespan,
        responses={422: {"model": ErrorOut, "description": "The request is malformed."}},
        # Installed below with their own Content-Security-Policy.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.keyring = keyring
    app.state.clock = _now
    app.state.bridge = None
    app.state.scorer = None
    app.state.metrics = ApiMetrics(_queue_reader(app))
    app.state.hub = live.Hub()
    app.state.stream_tokens = StreamTokens(keyring)
    app.add_middleware(ObserveRequests, metrics=app.state.metrics)
    _install_error_handlers(app)
    _install_docs(app)
    for router in routers:
        app.include_router(router)

    @app.get("/health", tags=["ops"], summary="Liveness")
    def health() -> dict[str, str]:
        """Liveness: the process is up and serving (no key needed)."""
        return {"status": "ok", "version": __version__}

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Metrics."}},
    )
    def metrics() -> Response:
        """Requests, latency, alerts ingested, verdicts, outbox and queue (no key needed)."""
        return Response(generate_latest(app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def page() -> Any:
        """The analysts' page; the key is pasted in the page, never needed to load it."""
        index = WEB / "index.html"
        if not index.is_file():
            return JSONResponse({"detail": "the web page is not installed"}, status_code=404)
        return FileResponse(index, headers={"cache-control": "no-store"})

    app.mount("/static", WebFiles(directory=WEB, check_dir=False), name="static")
    return app
