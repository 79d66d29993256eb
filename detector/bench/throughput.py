"""``fraudstream bench``: the streaming path through a real broker, side by side.

Every system reads the same pre-loaded transactions topic (the plain loop with a consumer
group of its own, the detector from the beginning, as it always does) and writes its own
fresh decisions topic; the detector also gets its own recovery folder and other topics.
Throughput is N / (last decision's Kafka timestamp - first decision's), read back from
the decisions topic after the run; wall time runs from the processes' start to the last
decision. Each system's peak RSS is VmHWM of each of its processes (``/proc``).
"""

from __future__ import annotations

import gc
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from detector.bench.infra import (
    BOOTSTRAP_ENV,
    BenchError,
    InputRecord,
    Topics,
    broker_for,
    free_addresses,
    load_records,
    produce_all,
    produce_paced,
    read_back,
    wait_for_records,
    work_dir,
)
from detector.bench.procs import (
    Child,
    alive_check,
    detector_args,
    dir_bytes,
    plain_loop_args,
    settings_env,
)
from detector.core import ScoringCore
from detector.replay.progress import ProgressBar
from detector.settings import Settings

log = structlog.get_logger("fraudstream.bench")

PLAIN = "plain loop"
LATENCY_WARMUP = 20_000
"""Transactions the latency detector decides before the paced load starts."""


@dataclass
class BenchOptions:
    dataset: Path
    transactions: int = 100_000
    partitions: int = 4
    processes: tuple[int, ...] = (1, 2)
    repeat: int = 1
    rate: float = 1000.0
    latency_seconds: float = 20.0
    stall_seconds: float = 180.0
    bootstrap: str | None = None


@dataclass
class RunResult:
    """One run of one system."""

    system: str
    expected: int
    decided: int
    """Transactions with a decision (distinct transaction ids)."""
    extra: int
    """Decision records beyond one per transaction (duplicates)."""
    per_second: float
    wall_seconds: float
    peak_rss_kib: list[int]
    store_bytes: int | None


@dataclass
class Latency:
    offered_rate: float
    achieved_rate: float
    count: int
    decided: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


@dataclass
class BenchReport:
    transactions: int
    partitions: int
    core_per_second: float
    runs: list[RunResult] = field(default_factory=list)
    latency: Latency | None = None

    @property
    def complete(self) -> bool:
        runs_ok = all(r.decided == r.expected and not r.extra for r in self.runs)
        latency_ok = self.latency is None or self.latency.decided == self.latency.count
        return runs_ok and latency_ok


def system_names(processes: Sequence[int]) -> list[str]:
    return [PLAIN, *(f"detector x{n}" for n in processes)]


def run_bench(settings: Settings, options: BenchOptions) -> BenchReport:
    """Run the whole benchmark; a ``BenchReport`` (``complete`` says if nothing was lost)."""
    n = options.transactions
    paced = round(options.rate * options.latency_seconds)
    warmup = min(n, LATENCY_WARMUP)
    records = load_records(options.dataset, max(n, warmup + paced))
    if len(records) < n:
        raise BenchError(f"{options.dataset} holds only {len(records):,} transactions")
    report = BenchReport(n, options.partitions, core_alone(settings, records[:n]))
    external = bool(options.bootstrap or os.environ.get(BOOTSTRAP_ENV))
    with work_dir() as work, broker_for(settings, options.bootstrap, work) as settings:
        topics = Topics(settings, options.partitions)
        try:
            source = topics.input_topic()
            produce_all(settings, source, records[:n], description="pre-loading")
            for round_ in range(options.repeat):
                for system in system_names(options.processes):
                    tag = f"{system.replace(' ', '')}-{round_}"
                    result = run_system(
                        topics.system(tag, transactions=source),
                        system,
                        records[:n],
                        work / tag,
                        options,
                    )
                    log.info(
                        "bench run",
                        system=system,
                        round=round_ + 1,
                        tx_per_s=round(result.per_second),
                        wall_s=round(result.wall_seconds, 1),
                        decided=result.decided,
                    )
                    report.runs.append(result)
            if paced:
                report.latency = run_latency(
                    topics.system("latency"), records, warmup, paced, work / "latency", options
                )
        finally:
            if external:  # a broker of our own goes away with its topics
                topics.delete()
    return report


def core_alone(settings: Settings, records: Sequence[InputRecord]) -> float:
    """``ScoringCore.process`` in this process on parsed transactions: transactions/s."""
    core = ScoringCore(settings.scoring.placed(shards=settings.detector.shards))
    elapsed = 0.0
    # The benchmark's own objects (every input record) are no business of the collector:
    # without this, each full collection would walk them and bill the core for it.
    gc.collect()
    gc.freeze()
    with ProgressBar("ScoringCore alone", total=len(records)) as tick:
        for record in records:
            started = time.perf_counter()
            core.process(record.transaction)
            elapsed += time.perf_counter() - started
            tick()
    gc.unfreeze()
    return len(records) / max(elapsed, 1e-9)


def run_system(
    settings: Settings,
    system: str,
    records: Sequence[InputRecord],
    folder: Path,
    options: BenchOptions,
) -> RunResult:
    """Start ``system`` on ``settings``' topics, wait for every decision, stop it, measure."""
    folder.mkdir(parents=True)
    recovery = folder / "recovery"
    children = start_system(settings, system, folder, recovery)
    try:
        wait_for_records(
            settings,
            settings.kafka.topic_decisions,
            len(records),
            alive=lambda: alive_check(children),
            description=system,
            stall_seconds=options.stall_seconds,
        )
    finally:
        for child in children:
            child.stop()
    started = min(child.started for child in children)
    read = read_back(settings, settings.kafka.topic_decisions)
    expected = {r.transaction_id for r in records}
    decided = expected.intersection(read.ids)
    first, last = min(read.timestamps), max(read.timestamps)
    return RunResult(
        system=system,
        expected=len(expected),
        decided=len(decided),
        extra=len(read.ids) - len(set(read.ids)),
        per_second=len(records) / max((last - first) / 1000.0, 1e-3),
        wall_seconds=last / 1000.0 - started,
        peak_rss_kib=[child.peak_kib for child in children],
        store_bytes=None if system == PLAIN else dir_bytes(recovery),
    )


def start_system(settings: Settings, system: str, folder: Path, recovery: Path) -> list[Child]:
    env = {**settings_env(settings), "FRAUDSTREAM_METRICS_PORT": "0"}
    if system == PLAIN:
        args = plain_loop_args(f"bench-plain-{uuid.uuid4().hex[:8]}")
        return [Child(system, args, env, folder / "plain.log")]
    processes = int(system.rsplit("x", 1)[1])
    env["FRAUDSTREAM_RECOVERY_DIR"] = str(recovery)
    if processes == 1:
        return [Child(system, detector_args(), env, folder / "detector.log")]
    addresses = free_addresses(processes)
    return [
        Child(
            f"{system} #{i}",
            detector_args(),
            {**env, "FRAUDSTREAM_PROCESS_ID": str(i), "FRAUDSTREAM_ADDRESSES": addresses},
            folder / f"detector-{i}.log",
        )
        for i in range(processes)
    ]


def run_latency(
    settings: Settings,
    records: Sequence[InputRecord],
    warmup: int,
    paced: int,
    folder: Path,
    options: BenchOptions,
) -> Latency:
    """A 1-process detector decides ``warmup`` transactions, then gets ``paced`` more at
    ``options.rate``: decision timestamp - transaction timestamp, joined by id.
    """
    folder.mkdir(parents=True)
    [child] = start_system(settings, "detector x1", folder, folder / "recovery")
    alive = lambda: alive_check([child])  # noqa: E731
    try:
        produce_all(
            settings, settings.kafka.topic_transactions, records[:warmup], description="warm-up"
        )
        wait_for_records(
            settings,
            settings.kafka.topic_decisions,
            warmup,
            alive=alive,
            description="latency warm-up",
            stall_seconds=options.stall_seconds,
        )
        load = records[warmup : warmup + paced]
        achieved = produce_paced(settings, settings.kafka.topic_transactions, load, options.rate)
        wait_for_records(
            settings,
            settings.kafka.topic_decisions,
            paced,
            alive=alive,
            description="latency decisions",
            stall_seconds=options.stall_seconds,
            start=warmup,
        )
    finally:
        child.stop()
    wanted = {r.transaction_id for r in load}
    sent = read_back(settings, settings.kafka.topic_transactions)
    sent_at = {i: ts for i, ts in zip(sent.ids, sent.timestamps, strict=True) if i in wanted}
    decisions = read_back(settings, settings.kafka.topic_decisions)
    delays = decisions.delays_after(sent_at)
    if not delays:
        raise BenchError("no decision for the paced transactions")
    return Latency(
        offered_rate=options.rate,
        achieved_rate=achieved,
        count=len(load),
        decided=len({i for i in decisions.ids if i in sent_at}),
        p50_ms=percentile(delays, 50),
        p95_ms=percentile(delays, 95),
        p99_ms=percentile(delays, 99),
        max_ms=delays[-1],
    )


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ordered, non-empty sequence."""
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# --- the report ------------------------------------------------------------------------


def _mib(kib: int) -> str:
    return f"{kib / 1024:,.0f}"


def _decided(runs: Sequence[RunResult]) -> str:
    """decided/expected of each run (once, with xN, when every run says the same)."""
    each = [f"{r.decided:,}/{r.expected:,}" + (f" +{r.extra} dup" if r.extra else "") for r in runs]
    if len(set(each)) == 1:
        return each[0] + (f" x{len(runs)}" if len(runs) > 1 else "")
    return " ".join(each)


def format_report(report: BenchReport, processes: Sequence[int]) -> str:
    """The table: one row per system, best of its runs, with the spread of the others."""
    header = (
        "system",
        "tx/s (best)",
        "spread",
        "vs plain loop",
        "wall s (best)",
        "peak RSS MiB/process",
        "recovery store",
        "decided",
    )
    rows: list[tuple[str, ...]] = [header]
    plain_best = max((r.per_second for r in report.runs if r.system == PLAIN), default=0.0)
    for system in system_names(processes):
        runs = [r for r in report.runs if r.system == system]
        if not runs:
            continue
        rates = [r.per_second for r in runs]
        best = max(rates)
        spread = (
            f"{min(rates):,.0f}-{best:,.0f} ({(best - min(rates)) / best:.0%})"
            if len(rates) > 1
            else "1 run"
        )
        peaks = [max(r.peak_rss_kib[i] for r in runs) for i in range(len(runs[0].peak_rss_kib))]
        stores = [r.store_bytes for r in runs if r.store_bytes is not None]
        rows.append(
            (
                system,
                f"{best:,.0f}",
                spread,
                f"{best / plain_best:.2f}x" if plain_best else "-",
                f"{min(r.wall_seconds for r in runs):.1f}",
                " / ".join(_mib(p) for p in peaks),
                f"{max(stores) / 2**20:,.1f} MiB" if stores else "-",
                _decided(runs),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        " | ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    lines.append("")
    lines.append(
        f"{report.transactions:,} Handbook transactions, {report.partitions} partitions; "
        f"ScoringCore alone in-process (no Kafka): {report.core_per_second:,.0f} tx/s"
    )
    if report.latency is not None:
        lat = report.latency
        lines.append(
            f"latency (detector x1, {lat.offered_rate:,.0f} tx/s offered, "
            f"{lat.achieved_rate:,.0f} achieved, {lat.decided:,}/{lat.count:,} decided): "
            f"p50 {lat.p50_ms:,.0f} ms, p95 {lat.p95_ms:,.0f} ms, p99 {lat.p99_ms:,.0f} ms, "
            f"max {lat.max_ms:,.0f} ms"
        )
    return "\n".join(lines)
