"""The detector as a real process (``python -m detector detect``) for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException

from detector.settings import KafkaSettings, Settings


def service_env(settings: Settings) -> dict[str, str]:
    """The environment that points a fraudstream process at ``settings``' broker and topics."""
    return {
        "FRAUDSTREAM_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        **{
            f"FRAUDSTREAM_{name.upper()}": getattr(settings.kafka, name)
            for name in KafkaSettings.model_fields
            if name.startswith("topic_") and isinstance(getattr(settings.kafka, name), str)
        },
    }


def detector_process(
    settings: Settings, tmp_path: Path, log: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start the detector on ``settings``' broker and topics, with ``env`` on top."""
    full = {
        **os.environ,
        "FRAUDSTREAM_RECOVERY_DIR": str(tmp_path / "recovery"),
        "FRAUDSTREAM_SNAPSHOT_INTERVAL_SECONDS": "0.5",
        "FRAUDSTREAM_LOG_LEVEL": "WARNING",
        # No metrics endpoint unless a test asks for one on a port of its own.
        "FRAUDSTREAM_METRICS_PORT": "0",
        **service_env(settings),
        **env,
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "detector", "detect"], env=full, stdout=out, stderr=out
        )


def wait_until(
    what: str,
    check: Callable[[], Any],
    proc: subprocess.Popen[bytes],
    log: Path,
    timeout: float = 120,
) -> Any:
    """``check()``'s first truthy result; fails if the detector dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            result = check()
        except KafkaException:  # new topics: partition leaders may still be settling
            result = None
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}\n" + log.read_text()[-3000:])
