"""``fraudstream bench --score``: the latency of synchronous scoring (``POST /api/score``).

A 1-process detector and one API process run with production settings on fresh topics
of a broker; the detector first decides ``warmup`` Handbook transactions from
``transactions``. Then the next transactions are posted to ``/api/score`` at ``rate``
requests a second (open loop: each request leaves at its time, whatever the others do),
from this process, over HTTP; a request's latency is its whole round trip as the client
sees it. The peer is the same HTTP round trip without the detector or Kafka
(``GET /health`` at the same rate, on the same API process). Nothing is asserted on time.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from detector.bench.infra import (
    BenchError,
    InputRecord,
    Topics,
    broker_for,
    load_records,
    produce_all,
    read_back,
    wait_for_records,
    work_dir,
)
from detector.bench.procs import Child, alive_check, settings_env
from detector.bench.throughput import percentile, start_system
from detector.local.broker_config import find_free_ports
from detector.settings import Settings

log = structlog.get_logger("fraudstream.bench")

READY_SECONDS = 60.0
STALL_SECONDS = 120.0  # no new decision for this long: the detector is stuck


@dataclass(frozen=True)
class ScoreOptions:
    dataset: Path
    rate: float = 200.0
    seconds: float = 20.0
    warmup: int = 5_000
    partitions: int = 4
    bootstrap: str | None = None


@dataclass(frozen=True)
class RoundTrips:
    """Round trips of one kind of request: how many, answered how, and how long."""

    sent: int
    achieved_rate: float
    answers: dict[str, int]  # decided, degraded (the fallback), or the HTTP status
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class ScoreReport:
    score: RoundTrips
    peer: RoundTrips
    inside: RoundTrips  # request record -> its reply record (Kafka timestamps)
    timeout_ms: int


def run_score_bench(settings: Settings, options: ScoreOptions) -> ScoreReport:
    needed = options.warmup + int(options.rate * options.seconds)
    records = load_records(options.dataset, needed)
    if len(records) < needed:
        raise BenchError(f"the dataset has {len(records)} transactions, {needed} are needed")
    with work_dir() as work, broker_for(settings, options.bootstrap, work) as on_broker:
        topics = Topics(on_broker, options.partitions)
        try:
            system = topics.system("score")
            return _run(system, records, options, work)
        finally:
            topics.delete()


def _run(
    settings: Settings, records: Sequence[InputRecord], options: ScoreOptions, work: Path
) -> ScoreReport:
    [detector] = start_system(settings, "detector x1", work, work / "recovery")
    key = secrets.token_urlsafe(24)
    [port] = find_free_ports(1)
    env = {
        **settings_env(settings),
        "FRAUDSTREAM_API_KEYS": f"scorer:bench:{key}",
        "FRAUDSTREAM_DATABASE_URL": f"sqlite:///{work / 'review.db'}",
        "FRAUDSTREAM_LOG_LEVEL": "WARNING",
    }
    args = [sys.executable, "-m", "detector", "api", "--host", "127.0.0.1", "--port", str(port)]
    api = Child("api", args, env, work / "api.log")
    children = [detector, api]
    try:
        warm = records[: options.warmup]
        produce_all(settings, settings.kafka.topic_transactions, warm, description="warm-up")
        wait_for_records(
            settings,
            settings.kafka.topic_decisions,
            len(warm),
            alive=lambda: alive_check(children),
            description="score warm-up",
            stall_seconds=STALL_SECONDS,
        )
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, children)
        load = records[options.warmup :]
        score = asyncio.run(_paced(url, key, load, options.rate, score=True))
        peer = asyncio.run(_paced(url, key, load, options.rate, score=False))
    finally:
        for child in children:
            child.stop()
    return ScoreReport(score, peer, _inside(settings), settings.api.score_timeout_ms)


def _inside(settings: Settings) -> RoundTrips:
    """The detector's share: each request's record to its reply's, by Kafka timestamps."""
    asked = read_back(settings, settings.kafka.topic_score_requests, "request_id")
    replied = read_back(settings, settings.kafka.topic_score_replies, "request_id")
    sent = dict(zip(asked.ids, asked.timestamps, strict=True))
    delays = replied.delays_after(sent)
    if not delays:
        raise BenchError("no reply to any score request")
    return RoundTrips(
        sent=len(sent),
        achieved_rate=0.0,
        answers={"replied": len(delays)},
        p50_ms=percentile(delays, 50),
        p99_ms=percentile(delays, 99),
        max_ms=delays[-1],
    )


def _wait_ready(url: str, children: Sequence[Child]) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        died = alive_check(children)
        if died:
            raise BenchError(f"a process died:\n{died}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1.0) as answer:
                if answer.status == 200:
                    time.sleep(2.0)  # the API's Kafka clients connect in the background
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise BenchError(f"the API did not answer at {url} within {READY_SECONDS:g} s")


class _Connections:
    """Kept-alive HTTP/1.1 connections to the API, one request at a time on each.

    A client this lean (a request is a few writes and reads on an open socket) keeps
    the benchmark's own cost out of the round trips: httpx, on this 2-core machine,
    could not send 200 requests a second to the API by itself.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        if self.idle:
            reader, writer = self.idle.pop()
            writer.write(head + body)
            status_line = await reader.readline()
            if not status_line:  # the server closed it meanwhile (keep-alive timeout)
                writer.close()
                return await self.request(head, body)
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            writer.write(head + body)
            status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        content = await reader.readexactly(length)
        self.idle.append((reader, writer))
        return int(status_line.split()[1]), content

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def _paced(
    url: str, key: str, load: Sequence[InputRecord], rate: float, *, score: bool
) -> RoundTrips:
    """Each request of ``load`` at its time (open loop); the round trips as measured."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    connections = _Connections(host, int(port))
    started = time.perf_counter()

    async def one(i: int, record: InputRecord) -> tuple[float, str]:
        await asyncio.sleep(max(started + i / rate - time.perf_counter(), 0.0))
        if score:
            head = (
                f"POST /api/score HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(record.value)}\r\n\r\n"
            ).encode()
            body = record.value
        else:
            head, body = f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(), b""
        begin = time.perf_counter()
        try:
            status, content = await connections.request(head, body)
        except (OSError, ValueError, asyncio.IncompleteReadError) as error:
            return time.perf_counter() - begin, type(error).__name__
        seconds = time.perf_counter() - begin
        if status != 200:
            return seconds, str(status)
        if not score:
            return seconds, "ok"
        return seconds, "degraded" if json.loads(content)["degraded"] else "decided"

    try:
        results = await asyncio.gather(*(one(i, r) for i, r in enumerate(load)))
    finally:
        connections.close()
    elapsed = time.perf_counter() - started
    times = sorted(seconds * 1000 for seconds, _ in results)
    return RoundTrips(
        sent=len(results),
        achieved_rate=len(results) / elapsed if elapsed > 0 else 0.0,
        answers=dict(Counter(outcome for _, outcome in results)),
        p50_ms=percentile(times, 50),
        p99_ms=percentile(times, 99),
        max_ms=times[-1],
    )


def format_score_report(report: ScoreReport, target_p99_ms: float = 100.0) -> str:
    rows = [
        "| requests | sent | achieved req/s | p50 | p99 | max | answers |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, trips in (
        ("POST /api/score (detector over Kafka)", report.score),
        ("GET /health (HTTP alone, the peer)", report.peer),
        ("in the detector: request record to reply record", report.inside),
    ):
        answers = ", ".join(f"{k} {v}" for k, v in sorted(trips.answers.items()))
        rate = f"{trips.achieved_rate:,.0f}" if trips.achieved_rate else "-"
        rows.append(
            f"| {name} | {trips.sent} | {rate} | {trips.p50_ms:.1f} ms | "
            f"{trips.p99_ms:.1f} ms | {trips.max_ms:.1f} ms | {answers} |"
        )
    gap = report.score.p99_ms - target_p99_ms
    verdict = (
        f"p99 {report.score.p99_ms:.1f} ms: within the target ({target_p99_ms:g} ms)"
        if gap <= 0
        else f"p99 {report.score.p99_ms:.1f} ms: {gap:.1f} ms over the target "
        f"({target_p99_ms:g} ms)"
    )
    return "\n".join([*rows, "", f"timeout {report.timeout_ms} ms; {verdict}"])
