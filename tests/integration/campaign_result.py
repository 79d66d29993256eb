"""The crash campaign's configuration and its result.

From the decision records and the offsets at each kill: what was lost, changed and
published twice, crash by crash.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

# A crash publishes again what the killed process published since its last committed
# snapshot. Under a steady stream that is about one snapshot interval of decisions. But
# a restarted process first catches up with what arrived while it was down (its first
# decision comes 3.5 to 6 s after its start on two cores: imports, snapshot, read-back,
# consumer start) and decides it in one epoch (up to a Kafka poll, kafka_batch_size per
# partition); a kill right after that epoch is published, before its snapshot is
# committed, publishes it all again. The margin is about that restart plus the commit
# lag. (A backlog of more than one poll, kafka_batch_size x partitions, may exceed it.)
DEFAULT_MARGIN_SECONDS = 5.0

Identity = tuple[str, str]  # (card_id, transaction_id)


@dataclass(frozen=True)
class CampaignConfig:
    """How hard to crash the detector."""

    kills: int = 10
    rate: float = 200.0  # transactions per second
    seed: int = 0
    min_interval: float = 1.0  # seconds between a (re)start and the next kill
    max_interval: float = 10.0
    snapshot_interval: float = 1.0  # FRAUDSTREAM_SNAPSHOT_INTERVAL_SECONDS
    settle_timeout: float = 180.0  # for the last process to decide everything
    customers: int = 2000
    terminals: int = 4000
    log_level: str = "WARNING"  # the detector's (its log is kept in the work folder)


@dataclass
class Crash:
    """One kill, and what the process started after it published again."""

    number: int
    uptime: float  # seconds since the killed process was started
    sent: int  # transactions acknowledged by the broker at the kill
    decided: int  # decision records on the topic right after the kill
    published: int  # of which the killed process published
    first_decision: float | None = None  # seconds from its start to its first decision
    duplicates: int = 0
    changed: int = 0


@dataclass
class CampaignResult:
    config: CampaignConfig
    sent: int
    records: int  # decision records read
    decided: int  # transactions with at least one decision
    lost: list[Identity]
    changed: list[Identity]
    verdict_changed: list[Identity]
    duplicates: int
    before_any_crash: int  # duplicates published by the first process (should be none)
    crashes: list[Crash]
    seconds: float
    examples: list[str] = field(default_factory=list)

    @property
    def max_duplicates_per_crash(self) -> int:
        return max((c.duplicates for c in self.crashes), default=0)

    def duplicate_bound(self, margin: float = DEFAULT_MARGIN_SECONDS) -> float:
        """The decisions of about one snapshot interval, plus what arrives while a process
        restarts: rate x (interval + the margin or the slowest restart, the longer).

        A kill just after a restarted process published its first epoch (all that arrived
        while it was down) and before that epoch's snapshot was committed publishes the
        whole epoch again; how long that backlog is depends on the machine's load.
        """
        return self.config.rate * (self.config.snapshot_interval + self._allowance(margin))

    def _allowance(self, margin: float) -> float:
        return max(margin, self._restart_seconds() or 0.0)

    def _restart_seconds(self) -> float | None:
        times = [c.first_decision for c in self.crashes[1:] if c.first_decision is not None]
        return max(times) if times else None

    def _slowest_restart(self) -> str:
        slowest = self._restart_seconds()
        return "-" if slowest is None else f"{slowest:.1f}"

    def table(self, margin: float = DEFAULT_MARGIN_SECONDS) -> str:
        c = self.config
        rows = [
            ("kills", f"{len(self.crashes)}"),
            ("rate (tx/s)", f"{c.rate:g}"),
            ("snapshot interval (s)", f"{c.snapshot_interval:g}"),
            ("seconds", f"{self.seconds:.0f}"),
            ("transactions sent", f"{self.sent}"),
            ("decision records", f"{self.records}"),
            ("transactions decided", f"{self.decided}"),
            ("lost (no decision)", f"{len(self.lost)}"),
            ("changed (records differ)", f"{len(self.changed)}"),
            ("  of which verdict differs", f"{len(self.verdict_changed)}"),
            ("duplicates (identical)", f"{self.duplicates}"),
            ("  before any crash", f"{self.before_any_crash}"),
            ("  max per crash", f"{self.max_duplicates_per_crash}"),
            ("slowest restart to a decision (s)", self._slowest_restart()),
            (
                f"  bound, rate x ({c.snapshot_interval:g} + {self._allowance(margin):.1f}) s",
                f"{self.duplicate_bound(margin):.0f}",
            ),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value:>8}" for name, value in rows]
        lines.append("")
        lines.append(
            f"{'crash':>5} {'uptime s':>8} {'1st decision s':>14} {'sent':>7} {'decided':>8} "
            f"{'published':>9} {'dups':>6} {'changed':>7}"
        )
        for crash in self.crashes:
            t = crash.first_decision
            first = "-" if t is None else f"{t:.1f}"
            lines.append(
                f"{crash.number:>5} {crash.uptime:>8.1f} {first:>14} {crash.sent:>7} "
                f"{crash.decided:>8} {crash.published:>9} {crash.duplicates:>6} {crash.changed:>7}"
            )
        lines.extend(self.examples[:5])
        return "\n".join(lines)


VERDICT = ("decision", "score", "reasons")


def analyse(
    config: CampaignConfig,
    sent: list[Identity],
    records: list[tuple[int, int, bytes]],
    crashes: list[Crash],
    boundaries: list[dict[int, int]],
    seconds: float,
) -> CampaignResult:
    """The campaign's figures from the decision records and the offsets at each kill."""
    by_tx: dict[Identity, list[tuple[int, int, bytes]]] = defaultdict(list)
    for partition, offset, value in sorted(records):
        body = json.loads(value)
        by_tx[(body["card_id"], body["transaction_id"])].append((partition, offset, value))

    def run_of(partition: int, offset: int) -> int:
        """0 for the first process, k for the one started after the k-th kill."""
        return sum(1 for b in boundaries if b.get(partition, 0) <= offset)

    changed: list[Identity] = []
    verdict_changed: list[Identity] = []
    duplicates = 0
    before_any_crash = 0
    examples: list[str] = []
    for identity, versions in by_tx.items():
        first = versions[0][2]
        first_body = json.loads(first)
        differs = False
        for partition, offset, value in versions[1:]:
            run = run_of(partition, offset)
            if value == first:
                duplicates += 1
                if run == 0:
                    before_any_crash += 1
                else:
                    crashes[run - 1].duplicates += 1
                continue
            differs = True
            if run > 0:
                crashes[run - 1].changed += 1
            body = json.loads(value)
            if any(body.get(k) != first_body.get(k) for k in VERDICT):
                verdict_changed.append(identity)
            if len(examples) < 5:
                was = run_of(versions[0][0], versions[0][1])
                examples.append(
                    f"changed {identity}, published by process {was} at "
                    f"{versions[0][:2]} then by process {run} at {(partition, offset)}:\n"
                    f"  {first!r}\n  {value!r}"
                )
        if differs:
            changed.append(identity)
    decided = set(by_tx)
    lost = [i for i in dict.fromkeys(sent) if i not in decided]
    return CampaignResult(
        config=config,
        sent=len(set(sent)),
        records=len(records),
        decided=len(decided),
        lost=lost,
        changed=changed,
        verdict_changed=sorted(set(verdict_changed)),
        duplicates=duplicates,
        before_any_crash=before_any_crash,
        crashes=crashes,
        seconds=seconds,
        examples=examples,
    )
