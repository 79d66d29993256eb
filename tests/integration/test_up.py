"""`fraudstream up` as a user runs it: one command, alerts within seconds, Ctrl-C stops all."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
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


def up_env(tmp_path: Path, jars_cache: Path) -> dict[str, str]:
    """`up` on free ports in a home of its own (no log format: up shortens the lines)."""
    kafka_port, _, api_port, metrics_port = find_free_ports(4)
    env = {
        **os.environ,
        "FRAUDSTREAM_HOME": str(tmp_path / "home"),
        "FRAUDSTREAM_KAFKA_LIBS_DIR": str(jars_cache),
        "FRAUDSTREAM_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
        "FRAUDSTREAM_API_PORT": str(api_port),
        "FRAUDSTREAM_METRICS_PORT": str(metrics_port),
    }
    for name in ("FRAUDSTREAM_LOG_FORMAT", "FRAUDSTREAM_API_KEYS", "FRAUDSTREAM_API_KEYS_FILE"):
        env.pop(name, None)
    return env


def start_up(env: dict[str, str], log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "detector", "up", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_for_text(
    proc: subprocess.Popen[bytes], log_path: Path, text: str | re.Pattern[str], timeout: float
) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = log_path.read_text(errors="replace")
        if text in output if isinstance(text, str) else text.search(output):
            return output
        assert proc.poll() is None, output[-3000:]
        time.sleep(0.5)
    raise AssertionError(f"no {text!r} within {timeout} s:\n" + log_path.read_text()[-3000:])


def fraudstream(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "detector", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_second_up_on_the_same_home_names_the_first_and_starts_nothing(
    tmp_path: Path, jars_cache: Path
) -> None:
    env = up_env(tmp_path, jars_cache)
    home = Path(env["FRAUDSTREAM_HOME"])
    first_log = tmp_path / "first.log"
    first = start_up(env, first_log, "--rate", "5")
    try:
        output = wait_for_text(first, first_log, "review page (admin):", 180)
        admin_url = re.search(r"review page \(admin\): (\S+)", output)
        assert admin_url is not None

        # The running system's page address with its key, again, from its home alone.
        url = fraudstream(env, "keys", "url")
        assert url.returncode == 0, url.stderr
        assert url.stdout.strip() == admin_url[1]
        record = home / "up.json"
        assert stat.S_IMODE(record.stat().st_mode) == 0o600
        assert json.loads(record.read_text())["pid"] == first.pid

        second = subprocess.run(
            [sys.executable, "-m", "detector", "up", "--rate", "5"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1, second.stdout + second.stderr
        message = second.stderr.strip()
        assert f"pid {first.pid}" in message, message
        api_page = f"http://127.0.0.1:{env['FRAUDSTREAM_API_PORT']}/"
        assert api_page in message, message
        assert "key=" not in message  # the refusal never shows the key
        # Nothing started: no broker start, no child process, no second simulator.
        assert "started" not in second.stdout + second.stderr
        time.sleep(3)
        assert first.poll() is None, first_log.read_text()[-3000:]
        assert first_log.read_text().count("simulating") == 1
    finally:
        first.send_signal(signal.SIGINT)
        code = first.wait(60)
    output = first_log.read_text()
    assert code == 0, output[-3000:]
    assert "Traceback" not in output, output[-5000:]
    assert not (home / "up.json").exists()
    gone = fraudstream(env, "keys", "url")
    assert gone.returncode == 1
    assert "no `fraudstream up` runs" in gone.stderr


def test_ctrl_c_while_the_broker_starts_stops_everything_without_a_traceback(
    tmp_path: Path, jars_cache: Path
) -> None:
    env = up_env(tmp_path, jars_cache)
    log_path = tmp_path / "up.log"
    up = start_up(env, log_path)
    try:
        wait_for_text(up, log_path, "formatting kafka storage", 60)
        time.sleep(1)
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(90)
    output = log_path.read_text()
    assert code == 0, output[-3000:]
    assert "Traceback" not in output, output[-5000:]
    assert "fraudstream is up" not in output
    assert not (tmp_path / "home" / "kafka" / "broker.pid").exists(), output[-3000:]


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

        # The API starts beside the detector: an early alert may come before it listens.
        health = None
        while health is None and time.monotonic() < deadline + 60:
            assert up.poll() is None, log_path.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/health", timeout=5) as r:
                    health = r.status
            except OSError:
                time.sleep(1)
        assert health == 200, "the API did not answer:\n" + log_path.read_text()[-3000:]

        # The attack `up` plants by default: a burst at term-0, and amounts tripled.
        burst = re.compile(r"detector event .*kind=terminal_burst.*subject=term-0")
        wait_for_text(up, log_path, burst, timeout=120)
        shift = re.compile(r"detector event .*kind=(score|feature)_shift")
        wait_for_text(up, log_path, shift, timeout=120)
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(60)
    output = log_path.read_text()
    assert code == 0, output[-3000:]
    for name in ("detector", "api", "simulator"):
        assert f"process={name}" in output and "stopped" in output
    assert "broker stopped" in output, output[-2000:]
    assert not (tmp_path / "home" / "kafka" / "broker.pid").exists()
