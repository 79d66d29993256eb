"""A local single-node Apache Kafka broker (KRaft), run from its jars without Docker.

``LocalBroker`` manages the broker's process: it fetches the jars once (``jars``),
writes its configuration (``broker_config``), formats its storage, and runs the broker
detached from the calling process. The broker is found again through its pid file, so
``start`` and ``stop`` may be called from different processes.

Optionally (``sasl=SaslListener(...)``) the broker also listens with SASL_PLAINTEXT and the
PLAIN mechanism for one user, to try and test clients with credentials; the PLAINTEXT
listener stays, for the broker's own traffic and local tools.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from confluent_kafka import KafkaException

from detector.local import jars
from detector.local.broker_config import (
    BrokerError,
    SaslListener,
    is_valid_cluster_id,
    new_cluster_id,
    render_properties,
    server_properties,
)
from detector.local.jars import require, tail
from detector.local.topics import new_admin, probe_config

if TYPE_CHECKING:
    from detector.settings import Settings

log = structlog.get_logger(__name__)

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})


@dataclass(frozen=True)
class BrokerStatus:
    """What ``LocalBroker.status`` reports."""

    reachable: bool
    pid: int | None
    managed: bool
    bootstrap: str
    data_dir: Path
    log_file: Path


class LocalBroker:
    """A single-node KRaft broker living in ``<home>/kafka``."""

    def __init__(
        self,
        home: Path,
        *,
        port: int = 9092,
        controller_port: int = 9093,
        host: str = "127.0.0.1",
        version: str = "3.9.1",
        heap: str = "512m",
        libs_dir: Path | None = None,
        deploy_dir: Path = DEPLOY_DIR,
        sasl: SaslListener | None = None,
    ) -> None:
        ports = [port, controller_port, *([sasl.port] if sasl else [])]
        if len(set(ports)) < len(ports):
            raise ValueError(f"the broker's ports must differ, got {ports}")
        self.home = Path(home).absolute()
        self.port = port
        self.controller_port = controller_port
        self.host = host
        self.version = version
        self.heap = heap
        self.sasl = sasl
        self.root = self.home / "kafka"
        self.libs_dir = Path(libs_dir).absolute() if libs_dir else self.root / "libs"
        self.deploy_dir = deploy_dir
        self.data_dir = self.root / "data"
        self.logs_dir = self.root / "logs"
        self.pid_file = self.root / "broker.pid"
        self.properties_file = self.root / "server.properties"
        self.log4j_file = self.root / "log4j.properties"
        self.cluster_id_file = self.root / "cluster.id"
        self.log_file = self.logs_dir / "server.log"
        self.console_file = self.logs_dir / "kafka.out"
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalBroker:
        """The broker for ``settings``: its port comes from a local first bootstrap server."""
        port = 9092
        if settings.kafka.brokers:
            host, _, port_text = settings.kafka.brokers[0].rpartition(":")
            if host in LOCAL_HOSTS and port_text.isdigit():
                port = int(port_text)
        return cls(
            settings.local.home,
            port=port,
            controller_port=port + 1,
            version=settings.local.kafka_version,
            heap=settings.local.kafka_heap,
            libs_dir=settings.local.kafka_libs_dir,
        )

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        """host:port of the SASL listener; ``BrokerError`` if the broker has none."""
        if self.sasl is None:
            raise BrokerError(f"{self!r} has no SASL listener")
        return f"{self.host}:{self.sasl.port}"

    def __repr__(self) -> str:
        return f"LocalBroker({self.bootstrap}, home={self.home}, version={self.version})"

    # --- jars ----------------------------------------------------------------------

    def jars_ready(self) -> bool:
        """Whether the cache holds a complete fetch of this Kafka version."""
        return jars.jars_ready(self.libs_dir, self.version)

    def fetch_jars(self) -> Path:
        """Fetch the broker's jars with Maven unless the cache is complete; return it."""
        return jars.fetch_jars(self.libs_dir, self.version, self.deploy_dir)

    # --- state ---------------------------------------------------------------------

    def is_reachable(self, timeout: float = 2.0) -> bool:
        """Whether a broker answers a metadata request at ``host:port``."""
        # A refused TCP connection answers at once; librdkafka would retry until timeout.
        if not _port_open(self.host, self.port, min(timeout, 1.0)):
            return False
        admin = new_admin(probe_config(self.bootstrap))
        try:
            admin.list_topics(timeout=timeout)
        except KafkaException:
            return False
        return True

    def managed_pid(self) -> int | None:
        """Pid of the broker this home started, if it still runs."""
        pid = self._read_pid()
        return pid if pid is not None and self._running(pid) else None

    def status(self) -> BrokerStatus:
        pid = self.managed_pid()
        return BrokerStatus(
            reachable=self.is_reachable(),
            pid=pid,
            managed=pid is not None,
            bootstrap=self.bootstrap,
            data_dir=self.data_dir,
            log_file=self.log_file,
        )

    def cluster_id(self) -> str:
        """This home's cluster id, created on first use and kept in ``cluster.id``."""
        if self.cluster_id_file.is_file():
            cluster_id = self.cluster_id_file.read_text().strip()
            if is_valid_cluster_id(cluster_id):
                return cluster_id
        cluster_id = new_cluster_id()
        self.cluster_id_file.parent.mkdir(parents=True, exist_ok=True)
        self.cluster_id_file.write_text(cluster_id + "\n")
        return cluster_id

    def render_server_properties(self) -> str:
        return render_properties(
            server_properties(
                host=self.host,
                port=self.port,
                controller_port=self.controller_port,
                data_dir=self.data_dir,
                sasl=self.sasl,
            )
        )

    # --- start and stop ------------------------------------------------------------

    def start(self, wait: float = 60) -> bool:
        """Start the broker and wait until it answers; False if one was already running."""
        if self.is_reachable(timeout=1.0):
            log.info("kafka broker already running, reusing it", bootstrap=self.bootstrap)
            return False
        pid = self.managed_pid()
        if pid is not None:
            # Started from this home but not answering yet: wait for it, never start twice.
            self._wait_ready(pid, wait)
            log.info("kafka broker already running, reusing it", bootstrap=self.bootstrap)
            return False
        self._check_ports_free()
        java = require("java", "a Java runtime (java), needed to run Kafka")
        libs = self.fetch_jars()
        self._write_config()
        self._format_storage(java, libs)
        started = time.monotonic()
        self._process = self._launch(java, libs)
        self.pid_file.write_text(f"{self._process.pid}\n")
        try:
            self._wait_ready(self._process.pid, wait)
        except BaseException:
            self.stop(timeout=10)
            raise
        log.info(
            "kafka broker started",
            bootstrap=self.bootstrap,
            pid=self._process.pid,
            seconds=round(time.monotonic() - started, 1),
        )
        return True

    def stop(self, timeout: float = 30) -> bool:
        """Stop the broker started from this home; False if none was running."""
        pid = self._read_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)  # absent or unreadable
            return False
        if not self._running(pid):
            log.info("removing stale kafka pid file", pid=pid, pid_file=str(self.pid_file))
            self.pid_file.unlink(missing_ok=True)
            return False
        log.info("stopping kafka broker", bootstrap=self.bootstrap, pid=pid)
        started = time.monotonic()
        _signal(pid, signal.SIGTERM)
        if not self._wait_exit(pid, timeout):
            log.warning("kafka broker ignored SIGTERM, killing it", pid=pid, timeout=timeout)
            _signal(pid, signal.SIGKILL)
            self._wait_exit(pid, 10)
        self.pid_file.unlink(missing_ok=True)
        log.info("kafka broker stopped", seconds=round(time.monotonic() - started, 1))
        return True

    def _check_ports_free(self) -> None:
        ports = [(self.port, "client"), (self.controller_port, "controller")]
        if self.sasl is not None:
            ports.append((self.sasl.port, "SASL client"))
        for port, role in ports:
            if not _port_free(self.host, port):
                raise BrokerError(
                    f"{self.host}:{port} ({role} port of the local broker) is used by another "
                    "process that is not a Kafka broker answering there; choose other ports"
                )

    def _write_config(self) -> None:
        for folder in (self.data_dir, self.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.properties_file.write_text(self.render_server_properties())
        log4j = self.deploy_dir / "log4j.properties"
        if not log4j.is_file():
            raise BrokerError(f"{log4j} is missing: it configures the local broker's logs")
        shutil.copyfile(log4j, self.log4j_file)

    def _format_storage(self, java: str, libs: Path) -> None:
        if (self.data_dir / "meta.properties").is_file():
            return
        cluster_id = self.cluster_id()
        log.info("formatting kafka storage", cluster_id=cluster_id, data_dir=str(self.data_dir))
        command = [
            *self._java_command(java, libs, heap=None), STORAGE_TOOL, "format",
            "-t", cluster_id, "-c", str(self.properties_file), "--ignore-formatted",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise BrokerError(
                f"formatting {self.data_dir} failed (exit {done.returncode}):\n"
                f"{tail(done.stdout + done.stderr)}\n{self._logtail()}"
            )

    def _java_command(self, java: str, libs: Path, heap: str | None) -> list[str]:
        memory = [f"-Xms{_initial_heap(heap)}", f"-Xmx{heap}"] if heap else []
        return [
            java, *memory, "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.logs_dir}", f"-Dlog4j.configuration=file:{self.log4j_file}",
            "-cp", f"{libs}/*",
        ]  # fmt: skip

    def _launch(self, java: str, libs: Path) -> subprocess.Popen[bytes]:
        command = [
            *self._java_command(java, libs, self.heap),
            MAIN_CLASS,
            str(self.properties_file),
        ]
        with open(self.console_file, "ab") as console:
            # A session of its own: Ctrl-C in the starting shell must not stop the broker.
            return subprocess.Popen(
                command,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_ready(self, pid: int, wait: float) -> None:
        deadline = time.monotonic() + wait
        while not self.is_reachable(timeout=1.0):
            if not self._running(pid):
                self.pid_file.unlink(missing_ok=True)
                raise BrokerError(f"the Kafka broker exited during startup\n{self._logtail()}")
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"the Kafka broker did not answer on {self.bootstrap} within {wait:g} s\n"
                    f"{self._logtail()}"
                )
            time.sleep(0.2)

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._running(pid):
                return True
            time.sleep(0.1)
        return False

    def _running(self, pid: int) -> bool:
        # Our own child is judged by its exit status: right after the spawn its command
        # line may still be Python's, and once dead it stays a zombie until waited for.
        if self._process is not None and self._process.pid == pid:
            return self._process.poll() is None
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return self._is_ours(pid)

    def _read_pid(self) -> int | None:
        try:
            text = self.pid_file.read_text().strip()
        except FileNotFoundError:
            return None
        # 0 and 1 would make kill/waitpid act on a process group or on init.
        return int(text) if text.isdigit() and int(text) > 1 else None

    def _is_ours(self, pid: int) -> bool:
        # The pid may have been reused since: by another program, or another broker.
        command = _command_line(pid)
        return MAIN_CLASS in command and str(self.properties_file) in command

    def _logtail(self) -> str:
        parts = []
        for path in (self.log_file, self.console_file):
            if path.is_file() and path.stat().st_size:
                text = path.read_text(errors="replace")
                parts.append(f"--- last lines of {path} ---\n{tail(text)}")
        return "\n".join(parts) or f"(no log in {self.logs_dir})"


def _command_line(pid: int) -> list[str]:
    """Arguments of process ``pid``; empty when it is gone or a zombie."""
    proc = Path("/proc")
    if proc.is_dir():
        try:
            raw = (proc / str(pid) / "cmdline").read_bytes()
        except OSError:
            return []
        return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]
    done = subprocess.run(
        ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    return done.stdout.split()


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _port_open(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        # As the JVM does: a port in TIME_WAIT from a previous broker is free to use.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _initial_heap(heap: str | None) -> str:
    # -Xms above -Xmx makes the JVM refuse to start.
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", heap or "")
    if match is None:
        return "256m"
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[match.group(2).lower()]
    return heap if heap and int(match.group(1)) * scale < 256 * 2**20 else "256m"
