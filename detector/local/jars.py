"""The local broker's jars: Apache Kafka fetched once with Maven into a cache folder.

``deploy/kafka/pom.xml`` lists them; a fetch goes to a staging folder swapped in whole,
so an interrupted fetch never leaves a half-filled cache, and a lock lets tests and a dev
shell share one cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import structlog

from detector.local.broker_config import BrokerError

log = structlog.get_logger(__name__)

MAVEN_COPY_DEPENDENCIES = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies"
VERSION_MARKER = ".kafka-version"
_TAIL_LINES = 40


def jars_ready(libs_dir: Path, version: str) -> bool:
    """Whether ``libs_dir`` holds a complete fetch of Kafka ``version``."""
    marker = libs_dir / VERSION_MARKER
    return (
        marker.is_file()
        and marker.read_text().strip() == version
        and (libs_dir / f"kafka_2.13-{version}.jar").is_file()
    )


def fetch_jars(libs_dir: Path, version: str, deploy_dir: Path) -> Path:
    """Fetch the jars of Kafka ``version`` with Maven (``deploy_dir/pom.xml``) into
    ``libs_dir``, unless it is complete already; return it."""
    if jars_ready(libs_dir, version):
        return libs_dir
    mvn = require("mvn", "Maven (mvn), needed once to fetch the Kafka jars")
    require("java", "a Java runtime (java), needed by Maven and Kafka")
    pom = deploy_dir / "pom.xml"
    if not pom.is_file():
        raise BrokerError(f"{pom} is missing: it lists the jars of the local broker")
    libs_dir.parent.mkdir(parents=True, exist_ok=True)
    # Tests and a dev shell may share the cache: one fetch at a time.
    with _locked(libs_dir.parent / f".{libs_dir.name}.lock"):
        if not jars_ready(libs_dir, version):
            _fetch_with_maven(libs_dir, version, mvn, pom)
    return libs_dir


def _fetch_with_maven(libs_dir: Path, version: str, mvn: str, pom: Path) -> None:
    # Fetch into a staging folder and swap it in: an interrupted or failed fetch
    # never leaves a half-filled cache, and jars of another version never mix in.
    staging = libs_dir.with_name(f"{libs_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copy2(pom, staging / "pom.xml")
    command = [
        mvn, "-B", "-q", "-f", str(staging / "pom.xml"),
        f"-Dkafka.version={version}", MAVEN_COPY_DEPENDENCIES,
        f"-DoutputDirectory={staging}", "-DincludeScope=runtime",
    ]  # fmt: skip
    log.info("fetching kafka jars with maven", version=version, cache=str(libs_dir))
    started = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=staging, capture_output=True, text=True, timeout=900, check=False
        )
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BrokerError("Maven did not fetch the Kafka jars within 15 minutes") from exc
    if done.returncode != 0 or not (staging / f"kafka_2.13-{version}.jar").is_file():
        shutil.rmtree(staging, ignore_errors=True)
        raise BrokerError(
            f"Maven could not fetch the jars of Kafka {version} "
            f"(exit {done.returncode}):\n{tail(done.stdout + done.stderr)}"
        )
    (staging / VERSION_MARKER).write_text(version + "\n")
    if libs_dir.exists():
        old = libs_dir.with_name(f"{libs_dir.name}.old-{os.getpid()}")
        libs_dir.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    staging.rename(libs_dir)
    log.info(
        "kafka jars fetched",
        version=version,
        jars=len(list(libs_dir.glob("*.jar"))),
        seconds=round(time.monotonic() - started, 1),
    )


def require(program: str, what: str) -> str:
    """The path of ``program``; ``BrokerError`` naming ``what`` is missing if not found."""
    path = shutil.which(program)
    if path is None:
        raise BrokerError(f"{what} was not found on PATH; install it and try again")
    return path


def tail(text: str, lines: int = _TAIL_LINES) -> str:
    """The last ``lines`` lines of ``text``, for error messages."""
    return "\n".join(text.strip().splitlines()[-lines:])


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[IO[str]]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
