"""``fraudstream up``: the whole local system under one supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field

import structlog

from detector.local.broker import LocalBroker
from detector.local.console import short_line
from detector.local.running import RunRecord, hold_home, write_record
from detector.local.topics import create_topics
from detector.settings import Settings

log = structlog.get_logger("fraudstream.up")

STOP_TIMEOUT_SECONDS = 20.0
# The simulator's pace in `fraudstream up`: a transaction a second, which one person can
# follow on the page and in the logs. (It replays the last 30 simulated days faster than
# the simulated cards pay, so its event time runs about 9 times faster than the clock.)
SIMULATOR_RATE = 1.0
# What `up` plants in the simulated traffic, so that a first run shows what the detector
# notices: a burst of small amounts from 60 cards at term-0 (`terminal_burst` and
# `card_testing`, about 2 minutes after start at the default rate), and amounts tripled for
# two simulated hours (`score_shift`, and `feature_shift` once enough features moved, from
# about 20 minutes in).
PLANTED_ATTACK = (
    "--attack-after-days=0.06",
    "--attack-terminal=0",
    "--attack-cards=60",
    "--shift-after-days=0.25",
    "--shift-factor=3",
    "--shift-hours=2",
)


@dataclass
class Child:
    """A supervised process whose output lines are prefixed with its name.

    With ``shorten``, its JSON log lines are shown as short lines (``console.short_line``).
    """

    name: str
    args: list[str]
    shorten: bool = False
    process: subprocess.Popen[bytes] | None = None
    pump: threading.Thread | None = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
        )
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()
        log.info("started", process=self.name, pid=self.process.pid)

    def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        width = 10
        for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            if self.shorten:
                line = short_line(line)
            sys.stdout.write(f"{self.name:<{width}}| {line}\n")
            sys.stdout.flush()

    def exited(self) -> int | None:
        return self.process.poll() if self.process else None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # SIGINT first: Bytewax and uvicorn both finish cleanly on it.
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning("did not stop in time, killing", process=self.name)
            self.process.kill()
            self.process.wait()
        if self.pump is not None:
            self.pump.join(timeout=2)
        log.info("stopped", process=self.name, code=self.process.returncode)


def children(
    settings: Settings,
    *,
    simulate: bool,
    rate: float,
    attack: bool = True,
    shorten: bool = False,
) -> list[Child]:
    me = [sys.executable, "-m", "detector"]
    result = [
        Child("detector", [*me, "detect"], shorten=shorten),
        Child("api", [*me, "api"], shorten=shorten),
    ]
    if simulate:
        planted = PLANTED_ATTACK if attack else ()
        result.append(
            Child("simulator", [*me, "simulate", "--rate", str(rate), *planted], shorten=shorten)
        )
    return result


def child_env(environ: dict[str, str]) -> tuple[dict[str, str], bool]:
    """The children's environment, and whether their lines are to be shortened.

    Unless FRAUDSTREAM_LOG_FORMAT is set, the children log JSON and ``up`` shows each
    event as a short line; a format that is set is passed on and shown as it is.
    """
    if environ.get("FRAUDSTREAM_LOG_FORMAT", "auto") != "auto":
        return dict(environ), False
    return {**environ, "FRAUDSTREAM_LOG_FORMAT": "json"}, True


@dataclass(frozen=True)
class LocalKeys:
    """Keys made up for one ``fraudstream up`` when none is configured."""

    admin: str
    analyst: str

    @property
    def env_value(self) -> str:
        return f"admin:local-admin:{self.admin},analyst:local-analyst:{self.analyst}"


def local_keys(settings: Settings) -> LocalKeys | None:
    """Fresh keys for the local system, or None when the user configured their own."""
    if settings.api.api_keys is not None or settings.api.api_keys_file is not None:
        return None
    from api.auth import new_key

    return LocalKeys(admin=new_key(), analyst=new_key())


def page_url(settings: Settings, key: str | None = None) -> str:
    """The analysts' page; with ``key`` it signs the browser in once."""
    host = settings.api.api_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{settings.api.api_port}/"
    return f"{url}?key={key}" if key else url


def announce_keys(settings: Settings, keys: LocalKeys) -> None:
    """Print (never log) the local keys once: they live only in this run's API process."""
    sys.stdout.write(
        "\n"
        "  No API key is configured, so this run made two (valid until it stops):\n"
        f"  review page (admin): {page_url(settings, keys.admin)}\n"
        f"  analyst key:         {keys.analyst}\n"
        "  `fraudstream keys url` prints this address again while the system runs.\n"
        "  Set FRAUDSTREAM_API_KEYS to keep keys across runs (`fraudstream keys new`).\n\n"
    )
    sys.stdout.flush()


def run_system(
    settings: Settings,
    *,
    simulate: bool = True,
    rate: float = SIMULATOR_RATE,
    attack: bool = True,
) -> None:
    """Start everything, wait for Ctrl-C (or a child's death), stop everything.

    Raises ``running.AlreadyRunningError``, before starting anything, if another ``up``
    runs on the same home.
    """
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    # From the start: a Ctrl-C while the broker starts stops cleanly, without a traceback.
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with hold_home(settings.local.home):
            _run_held(settings, simulate=simulate, rate=rate, attack=attack, stopping=stopping)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run_held(
    settings: Settings,
    *,
    simulate: bool,
    rate: float,
    attack: bool,
    stopping: threading.Event,
) -> None:
    keys = local_keys(settings)
    write_record(
        settings.local.home,
        RunRecord(
            pid=os.getpid(),
            page=page_url(settings),
            admin_url=page_url(settings, keys.admin) if keys else None,
        ),
    )
    broker = LocalBroker.from_settings(settings)
    started_broker = False
    procs: list[Child] = []
    try:
        started_broker = broker.start()
        log.info("broker ready", bootstrap=settings.kafka.bootstrap_servers, started=started_broker)
        if stopping.is_set():
            return
        for topic, outcome in create_topics(settings).items():
            log.info("topic", topic=topic, outcome=outcome)

        env, shorten = child_env(dict(os.environ))
        # Only the API process gets the keys, and only through its environment.
        api_env = {**env, "FRAUDSTREAM_API_KEYS": keys.env_value} if keys else env
        procs = children(settings, simulate=simulate, rate=rate, attack=attack, shorten=shorten)
        for child in procs:
            if stopping.is_set():
                return
            child.start(api_env if child.name == "api" else env)
        log.info(
            "fraudstream is up",
            api=page_url(settings),
            metrics=[
                f"http://{settings.detector.metrics_host}:{settings.detector.metrics_port}/metrics"
                if settings.detector.metrics_port
                else None,
                f"{page_url(settings).rstrip('/')}/metrics",
            ],
            topics=settings.kafka.topics,
        )
        if keys is not None:
            announce_keys(settings, keys)
        while not stopping.wait(0.5):
            for child in procs:
                code = child.exited()
                # The simulator may end by itself (--days); the others must not.
                if code is not None and not (child.name == "simulator" and code == 0):
                    log.error("process exited, stopping everything", process=child.name, code=code)
                    stopping.set()
    finally:
        log.info("stopping")
        for child in reversed(procs):
            child.stop()
        if started_broker:
            broker.stop()
            log.info("broker stopped")
