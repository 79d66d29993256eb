"""`fraudstream up` as a user runs it: one command, alerts within seconds, Ctrl-C stops all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from detector.contracts import Alert
from detector.local.broker_config import find_free_ports

pytestmark = pytest.mark.slow


def test_up_runs_the_whole_system_and_stops_cleanly(tmp_path: Path, jars_cache: Path) -> None:
    kafka_port, _, api_port, metrics_port = find_free_ports(4)
    env = {
        **os.environ,
        "FRAUDSTREAM_HOME": str(tmp_path / "home"),
        "FRAUDSTREAM_KAFKA_LIBS_DIR": str(jars_cache),
        "FRAUDSTREAM_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
        "FRAUDSTREAM_API_PORT": str(api_port),
        "FRAUDSTREAM_METRICS_PORT": str(metrics_port),
        "FRAUDSTREAM_LOG_FORMAT": "console",
    }
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "detector", "up", "--rate", "500"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        consumer = Consumer(
            {
                "bootstrap.servers": f"127.0.0.1:{kafka_port}",
                "group.id": "test-up",
                "auto.offset.reset": "earliest",
            }
        )
        deadline = time.monotonic() + 180
        alert = None
        subscribed = False
        while alert is None and time.monotonic() < deadline:
            assert up.poll() is None, log_path.read_text()[-3000:]
            if not subscribed:
                try:
                    topics = consumer.list_topics(timeout=2).topics
                except Exception:  # the broker is still starting
                    time.sleep(1)
                    continue
                if "alerts" not in topics:
                    time.sleep(1)
                    continue
                consumer.subscribe(["alerts"])
                subscribed = True
            msg = consumer.poll(1)
            if msg is not None and msg.error() is None:
                alert = Alert.model_validate_json(msg.value())
        consumer.close()
        assert alert is not None, "no alert within 3 minutes:\n" + log_path.read_text()[-3000:]
        assert alert.reasons

        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/health", timeout=5) as resp:
            assert resp.status == 200
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(60)
    output = log_path.read_text()
    assert code == 0, output[-3000:]
    for name in ("detector", "api", "simulator"):
        assert f"process={name}" in output and "stopped" in output
    assert "broker stopped" in output, output[-2000:]
    assert not (tmp_path / "home" / "kafka" / "broker.pid").exists()
