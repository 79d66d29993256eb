"""What the browser tests of the analysts' page share: the real app served on a free port,
Debian's Chromium, the labels topic read back and the Content-Security-Policy watched."""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from confluent_kafka import Consumer
from playwright.sync_api import ConsoleMessage, Page
from pydantic import SecretStr

from api.main import create_app
from detector.contracts import Label
from detector.local.broker_config import find_free_ports
from detector.settings import Settings
from tests.factories import settings_with

ANA_KEY = "ana-" + uuid.uuid4().hex
BOB_KEY = "bob-" + uuid.uuid4().hex
TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class Service:
    url: str
    settings: Settings


def chromium_path() -> str:
    """Debian's Chromium; Playwright's own browser download is never used."""
    path = shutil.which("chromium")
    if path:
        return path
    message = "chromium not found on PATH: the web test drives Debian's chromium package"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@contextmanager
def serve(unique_topics: Settings, tmp_path: Path) -> Iterator[Service]:
    """The real app (Kafka bridge on) served by uvicorn in a thread on a free port, with
    two analysts' keys (ana and bob)."""
    settings = settings_with(
        unique_topics,
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path}/review.db",
        api_keys=SecretStr(f"analyst:ana:{ANA_KEY},analyst:bob:{BOB_KEY}"),
        outbox_interval_seconds=0.2,
    )
    port = find_free_ports(1)[0]
    config = uvicorn.Config(
        create_app(settings, kafka=True), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive(), "the app stopped while starting"
        assert time.monotonic() < deadline, "the app did not start within 60 s"
        time.sleep(0.05)
    try:
        yield Service(f"http://127.0.0.1:{port}", settings)
    finally:
        server.should_exit = True
        thread.join(30)


def read_labels(settings: Settings, expected: int, timeout: float = 30) -> list[Label]:
    """The first ``expected`` labels of the labels topic, waiting up to ``timeout``."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.kafka.topic_labels])
    labels: list[Label] = []
    deadline = time.monotonic() + timeout
    try:
        while len(labels) < expected and time.monotonic() < deadline:
            for message in consumer.consume(10, timeout=0.5):
                assert message.error() is None, message.error()
                labels.append(Label.model_validate_json(message.value()))
    finally:
        consumer.close()
    return labels


def watch_csp(page: Page) -> list[str]:
    """Content-Security-Policy violations of ``page``, as they happen.

    Both ways a browser reports them: the console line Chromium writes and the DOM's
    ``securitypolicyviolation`` event (which a listener added before any page script
    hears, and hands to Python through an exposed function).
    """
    violations: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Trusted Type" in message.text:
            violations.append(f"console: {message.text}")

    page.on("console", on_console)
    page.expose_function("reportCspViolation", lambda text: violations.append(str(text)))
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', (e) => "
        "window.reportCspViolation(`event: ${e.effectiveDirective} blocked ${e.blockedURI} "
        "at ${e.sourceFile}:${e.lineNumber}`), true);"
    )
    return violations


def assert_csp_is_enforced(page: Page, violations: list[str]) -> None:
    """No violation so far; then a blocked image proves the policy and the watch work."""
    assert not violations, violations
    page.evaluate(
        "() => { const img = document.createElement('img');"
        " img.src = 'http://192.0.2.1/not-allowed.png'; document.body.append(img); }"
    )
    deadline = time.monotonic() + 10
    while not violations and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert any("img-src" in v and "192.0.2.1" in v for v in violations), violations
