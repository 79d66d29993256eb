"""Ctrl-C ends every process without a traceback, and `tail` prints what a topic holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from detector.local.broker_config import find_free_ports
from detector.settings import Settings
from tests.integration.kafka_io import consume_all, produce
from tests.integration.processes import service_env

pytestmark = pytest.mark.slow


def start(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "detector", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def interrupt_when(
    proc: subprocess.Popen[bytes], log_path: Path, text: str, *, then_wait: float = 2.0
) -> tuple[int, str]:
    """Ctrl-C (SIGINT) ``then_wait`` seconds after ``text`` is printed; exit code and output."""
    deadline = time.monotonic() + 120
    try:
        while text not in log_path.read_text(errors="replace"):
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, f"no {text!r}:\n" + log_path.read_text()[-3000:]
            time.sleep(0.3)
        time.sleep(then_wait)
        assert proc.poll() is None, log_path.read_text()[-3000:]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    return code, log_path.read_text(errors="replace")


def env_for(settings: Settings, tmp_path: Path) -> dict[str, str]:
    _, api_port = find_free_ports(2)
    return {
        **os.environ,
        **service_env(settings),
        "FRAUDSTREAM_HOME": str(tmp_path / "home"),
        "FRAUDSTREAM_API_PORT": str(api_port),
        "FRAUDSTREAM_API_KEYS": "admin:local-admin:" + "k" * 32,
        "FRAUDSTREAM_METRICS_PORT": "0",
        "FRAUDSTREAM_LOG_FORMAT": "console",
    }


@pytest.mark.parametrize(
    ("args", "ready"),
    [
        (["simulate", "--rate", "200", "--customers", "200", "--terminals", "400"], "simulating"),
        (["detect"], "detector starting"),
        (["api"], "Uvicorn running"),
    ],
    ids=["simulate", "detect", "api"],
)
def test_ctrl_c_ends_the_process_without_a_traceback(
    args: list[str], ready: str, unique_topics: Settings, tmp_path: Path
) -> None:
    log_path = tmp_path / "out.log"
    code, output = interrupt_when(
        start(args, env_for(unique_topics, tmp_path), log_path), log_path, ready, then_wait=3
    )
    assert code == 0, output[-3000:]
    assert "Traceback" not in output and "SystemError" not in output, output[-5000:]
    if args[0] == "simulate":  # it was publishing, and says what it delivered
        assert "published" in output, output[-3000:]
        assert consume_all(unique_topics, unique_topics.kafka.topic_transactions)


def test_ctrl_c_ends_a_replay_with_what_was_delivered(
    unique_topics: Settings, tmp_path: Path
) -> None:
    env = env_for(unique_topics, tmp_path)
    data = tmp_path / "data.jsonl"
    made = subprocess.run(
        [sys.executable, "-m", "detector", "simulate", "--out", str(data), "--limit", "2000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    log_path = tmp_path / "replay.log"
    proc = start(["replay", str(data), "--rate", "100"], env, log_path)
    # The progress bar is drawn on a terminal only; the replay's first deliveries show it runs.
    deadline = time.monotonic() + 60
    while not consume_all(unique_topics, unique_topics.kafka.topic_transactions):
        assert time.monotonic() < deadline and proc.poll() is None, log_path.read_text()
        time.sleep(0.5)
    code, output = interrupt_when(proc, log_path, "", then_wait=1)
    assert code == 0, output[-3000:]
    assert "Traceback" not in output and "SystemError" not in output, output[-5000:]
    delivered = int(output.split("published ")[1].split(" ")[0])
    assert 0 < delivered < 2000, output[-3000:]


def test_tail_prints_a_topic_as_json_lines(unique_topics: Settings, tmp_path: Path) -> None:
    topic = unique_topics.kafka.topic_alerts
    records = [json.dumps({"n": n, "card_id": f"card-{n}"}).encode() for n in range(5)]
    produce(unique_topics, topic, [(f"card-{n}", value) for n, value in enumerate(records)])
    env = env_for(unique_topics, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "detector", "tail", topic, "--from-beginning", "--limit", "5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sorted(json.loads(line)["n"] for line in lines) == list(range(5))

    missing = subprocess.run(
        [sys.executable, "-m", "detector", "tail", topic + "-missing"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr and "Traceback" not in missing.stderr

    # Following the end: Ctrl-C stops it cleanly.
    log_path = tmp_path / "tail.log"
    follow = start(["tail", topic], env, log_path)
    deadline = time.monotonic() + 60
    while "reading" not in log_path.read_text():
        assert time.monotonic() < deadline and follow.poll() is None, log_path.read_text()
        time.sleep(0.2)
    produce(unique_topics, topic, [("card-9", b'{"n": 9}')])
    code, output = interrupt_when(follow, log_path, '{"n":9}', then_wait=0.5)
    assert code == 0, output
    assert '{"n":9}' in output.splitlines(), output
    assert '"n":0' not in output  # from the end: the earlier records are not printed
    assert "Traceback" not in output, output
