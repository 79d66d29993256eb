"""The systems under test as real processes, measured from outside (``/proc``, the disk)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import structlog

from detector.bench.infra import TOPIC_FIELDS
from detector.settings import Settings

log = structlog.get_logger("fraudstream.bench")

SAMPLE_SECONDS = 0.5
_BACKTRACE_FRAME = re.compile(r"^\s+(\d+: |at )")
_FAILURE = re.compile(r"panicked at|Traceback|Error\b|\berror\b")
STOP_SECONDS = 20.0


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that points a fraudstream process at ``settings``' broker and topics."""
    env = {
        "FRAUDSTREAM_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        **{
            f"FRAUDSTREAM_{name.upper()}": str(getattr(settings.kafka, name))
            for name in TOPIC_FIELDS
        },
    }
    if settings.kafka.kafka_extra_config:
        env["FRAUDSTREAM_KAFKA_EXTRA_CONFIG"] = json.dumps(settings.kafka.kafka_extra_config)
    return env


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of ``pid`` in KiB, from ``/proc/<pid>/status``; {} if gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0])
    return out


def dir_bytes(path: Path, pattern: str = "*") -> int:
    """Bytes of every file under ``path`` whose name matches ``pattern`` (0 if none)."""
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob(pattern) if f.is_file())


class Child:
    """A process of a system under test: its log goes to a file, its peak RSS is sampled."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], log_file: Path):
        self.name = name
        self.log_file = log_file
        self.peak_kib = 0
        self.started = time.time()
        with log_file.open("ab") as out:
            self.process = subprocess.Popen(
                list(args),
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        log.debug("bench process started", process=name, pid=self.process.pid)

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.rss_kib()

    def rss_kib(self) -> int:
        """Current RSS in KiB (0 once exited); updates the peak."""
        memory = memory_kib(self.process.pid)
        self.peak_kib = max(self.peak_kib, memory.get("VmHWM", 0))
        return memory.get("VmRSS", 0)

    def died(self) -> str | None:
        code = self.process.poll()
        if code is None:
            return None
        return f"{self.name} exited with code {code}; its log ends:\n{self.log_tail()}"

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the log, without the frames of Rust backtraces (Bytewax panics)."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        lines = [line for line in text.splitlines() if not _BACKTRACE_FRAME.match(line)]
        tail = "\n".join(lines)[-chars:]
        # The first failure is the cause; what a cluster prints after it is the fallout.
        first = next((i for i, line in enumerate(lines) if _FAILURE.search(line)), None)
        if first is None:
            return tail
        cause = "\n".join(lines[first : first + 8])[:chars]
        return tail if cause in tail else f"{cause}\n...\n{tail}"

    def stop(self) -> None:
        """Read the peak RSS one last time, then SIGINT (both systems stop at once on it)."""
        self.rss_kib()
        self._stop.set()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                log.warning("bench process did not stop, killing it", process=self.name)
                self.process.kill()
                self.process.wait()
        self._sampler.join(timeout=2)


def detector_args() -> list[str]:
    return [sys.executable, "-m", "detector", "detect"]


def plain_loop_args(group_id: str) -> list[str]:
    return [sys.executable, "-m", "detector.bench.plain", "--group-id", group_id]


def alive_check(children: Sequence[Child]) -> str | None:
    """None while every process runs; else what each dead one said (in a cluster, the
    first to die takes the others down, so every log matters).
    """
    if all(child.process.poll() is None for child in children):
        return None
    time.sleep(1.0)  # let the others of a cluster end too, and their logs be written
    reasons = [reason for child in children if (reason := child.died())]
    return "\n".join(reasons) or None
