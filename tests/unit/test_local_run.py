"""The local system's first hour: one `up` per home, short lines, and clear failures."""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import structlog

from detector.local.broker_config import find_free_ports
from detector.local.console import short_line
from detector.local.logs import configure_logging
from detector.local.running import (
    AlreadyRunningError,
    RunRecord,
    hold_home,
    is_held,
    read_record,
    record_path,
    write_record,
)
from detector.local.tail import json_line

HOLDER = """
import sys, time
from pathlib import Path
from detector.local.running import RunRecord, hold_home, write_record
home = Path(sys.argv[1])
with hold_home(home):
    write_record(home, RunRecord(pid=__import__("os").getpid(), page="http://127.0.0.1:1/"))
    print("held", flush=True)
    time.sleep(600)
"""


def start_holder(home: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(home)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_home_held_by_a_live_process_is_refused_with_its_pid_and_page(tmp_path: Path) -> None:
    holder = start_holder(tmp_path)
    try:
        assert is_held(tmp_path)
        with pytest.raises(AlreadyRunningError) as refused, hold_home(tmp_path):
            pytest.fail("a held home was taken")
        assert f"pid {holder.pid}" in str(refused.value)
        assert "http://127.0.0.1:1/" in str(refused.value)
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_and_record_of_a_killed_system_block_nothing(tmp_path: Path) -> None:
    holder = start_holder(tmp_path)
    holder.kill()  # no clean-up at all: the lock file and up.json stay behind
    holder.wait()
    assert record_path(tmp_path).exists()
    assert not is_held(tmp_path)
    assert read_record(tmp_path) is None  # a dead system's record is not believed
    with hold_home(tmp_path):
        write_record(tmp_path, RunRecord(pid=os.getpid(), page="http://127.0.0.1:2/"))
        assert is_held(tmp_path)
    assert not record_path(tmp_path).exists()


def test_the_record_is_readable_by_its_owner_alone(tmp_path: Path) -> None:
    old = os.umask(0)  # even with a permissive umask
    try:
        with hold_home(tmp_path):
            write_record(tmp_path, RunRecord(1234, "http://h/", "http://h/?key=secret"))
            mode = stat.S_IMODE(record_path(tmp_path).stat().st_mode)
    finally:
        os.umask(old)
    assert mode == 0o600


def event_line(**fields: object) -> str:
    return json.dumps({"timestamp": "2026-12-01T07:00:55.672261Z", "level": "info", **fields})


def test_an_alert_is_one_short_line() -> None:
    line = short_line(
        event_line(
            event="alert",
            transaction_id="sim-263382-1234",
            decision="review",
            score=0.027,
            reason="amount 161.65 rarer than 73.3% of past transactions",
        )
    )
    assert line == (
        "07:00:55 alert review 0.027 sim-263382-1234 "
        "amount 161.65 rarer than 73.3% of past transactions"
    )


def test_other_events_keep_their_fields_and_show_levels_above_info() -> None:
    line = short_line(
        event_line(event="kafka broker lost", level="error", bootstrap="127.0.0.1:9092", n=[1])
    )
    assert line == "07:00:55 ERROR kafka broker lost bootstrap=127.0.0.1:9092 n=[1]"
    listed = short_line(event_line(event="x", topics=["alerts", "model-status"]))
    assert listed == '07:00:55 x topics=["alerts","model-status"]'
    assert short_line(event_line(event="x", text="two words")) == '07:00:55 x text="two words"'
    assert len(short_line(event_line(event="x", text="a" * 1000))) < 200


@pytest.mark.parametrize(
    "raw", ["INFO:     Uvicorn running on http://127.0.0.1:8000", "{not json", "[1, 2]", "{}"]
)
def test_lines_that_are_not_log_events_pass_unchanged(raw: str) -> None:
    assert short_line(raw) == raw


def test_a_traceback_stays_under_its_event() -> None:
    line = short_line(event_line(event="failed", exception="Traceback\n  boom\n"))
    assert line == "07:00:55 failed\nTraceback\n  boom"


def request_lines(requests: bool, level: str = "INFO") -> str:
    err = io.StringIO()
    old = sys.stderr
    sys.stderr = err
    try:
        configure_logging(level, "json", requests=requests)
        log = structlog.get_logger("fraudstream.api")
        log.info("request", method="GET", path="/api/alerts", status=200, ms=1.0)
        log.info("verdict", alert_id="a", actor="x", label="fraud")
    finally:
        sys.stderr = old
        configure_logging()
    return err.getvalue()


def test_request_lines_are_off_unless_asked_for() -> None:
    quiet = request_lines(requests=False)
    assert '"request"' not in quiet and '"verdict"' in quiet
    assert '"request"' in request_lines(requests=True)
    assert '"request"' in request_lines(requests=False, level="DEBUG")


def test_tail_prints_json_lines() -> None:
    assert json_line(b'{"a": 1,\n "b": "x"}') == '{"a":1,"b":"x"}'
    assert json_line(b"not json") == '"not json"'
    assert json_line(None) == '""'


def run(
    args: list[str], env: dict[str, str], *, interrupt_at: str | None = None
) -> tuple[int, str]:
    """Run a command to its end; with ``interrupt_at``, Ctrl-C once that text is printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "detector", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    if interrupt_at is not None:
        for line in proc.stdout:
            lines.append(line)
            if interrupt_at in line:
                time.sleep(0.5)
                proc.send_signal(signal.SIGINT)
                break
    output, _ = proc.communicate(timeout=60)
    return proc.returncode, "".join(lines) + output


@pytest.fixture
def closed_port_env(tmp_path: Path) -> dict[str, str]:
    (port,) = find_free_ports(1)  # nothing listens there
    return {
        **os.environ,
        "FRAUDSTREAM_HOME": str(tmp_path / "home"),
        "FRAUDSTREAM_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "FRAUDSTREAM_LOG_FORMAT": "console",
    }


@pytest.mark.slow
@pytest.mark.parametrize("command", ["simulate", "replay", "tail"])
def test_an_unreachable_broker_is_one_line_naming_the_address_and_the_setting(
    command: str, closed_port_env: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "data.jsonl"
    code, output = run(
        ["simulate", "--out", str(data), "--limit", "50", "--customers", "50", "--seed", "1"],
        closed_port_env,
    )
    assert code == 0, output
    args = {
        "simulate": ["simulate", "--customers", "50", "--terminals", "100", "--rate", "1000"],
        "replay": ["replay", str(data)],
        "tail": ["tail", "alerts"],
    }[command]
    code, output = run(args, closed_port_env)
    assert code == 1, output
    address = closed_port_env["FRAUDSTREAM_BOOTSTRAP_SERVERS"]
    errors = [line for line in output.splitlines() if line.startswith(f"fraudstream {command}:")]
    assert len(errors) == 1, output
    assert address in errors[0] and "FRAUDSTREAM_BOOTSTRAP_SERVERS" in errors[0]
    # Only the start line besides: no librdkafka lines, no progress bar, no traceback.
    assert len(output.strip().splitlines()) <= 2, output
    assert "Traceback" not in output and "publishing" not in output


@pytest.mark.slow
def test_ctrl_c_while_waiting_for_the_broker_ends_without_a_traceback(
    closed_port_env: dict[str, str],
) -> None:
    code, output = run(
        ["simulate", "--customers", "50", "--terminals", "100"],
        closed_port_env,
        interrupt_at="simulating",
    )
    assert "Traceback" not in output, output
    assert code == 1, output
    assert "FRAUDSTREAM_BOOTSTRAP_SERVERS" in output


def test_keys_url_prints_the_running_systems_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from detector.cli import app

    monkeypatch.setenv("FRAUDSTREAM_HOME", str(tmp_path))
    runner = CliRunner()
    none = runner.invoke(app, ["keys", "url"])
    assert none.exit_code == 1
    with hold_home(tmp_path):  # a lock taken here is held for the command's own probe too
        write_record(tmp_path, RunRecord(os.getpid(), "http://h:1/", "http://h:1/?key=k1"))
        assert runner.invoke(app, ["keys", "url"]).output.strip() == "http://h:1/?key=k1"
        write_record(tmp_path, RunRecord(os.getpid(), "http://h:1/"))  # keys configured
        own = runner.invoke(app, ["keys", "url"])
        assert own.exit_code == 0 and own.output.startswith("http://h:1/\n")
        assert "FRAUDSTREAM_API_KEYS" in own.output
