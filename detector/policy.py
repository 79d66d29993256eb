"""Rules, allow and block lists, and the safety valves, on top of the model's decision.

Precedence, strongest first:

1. an entry on an allow list (``allow.card_id``, ``allow.terminal_id``, ``allow.device_id``,
   ``allow.country``): allow;
2. an entry on a block list (``block.*``): block;
3. the active rules that match: the strictest of their outcomes (block, review, allow);
   every rule is evaluated on every transaction, so its hits count all it matches;
4. the model's decision under its thresholds (none when the model's score is unusable:
   the decision is then ``degraded`` and, without a list entry or rule, allow).

Then the safety valves: the block cap (past ``max_block_share`` of the last
``block_window`` decisions, a block becomes a review) and the global mode (``review_only``:
blocks become reviews; ``monitor``: everything is allowed, and a reason says what would
have happened). Shadow rules only count their hits.

Reasons: the list entry or rule that decided stands first; then the model's reasons; then
what a valve did ("blocks capped: ...", "monitor mode: would have blocked").

Expiry is by the wall clock at decision time (an admin's "until 31 December" is a date in
the real world, even while the detector catches up on older transactions); an expired
rule or entry stops applying at once and leaves the state.

The policy is plain state kept in the model step (pickled into its snapshots): compiled
expressions do not pickle, so they are built on first use and dropped when pickled.
A rule that fails at run time counts as not matched, is counted, and is logged once.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import Any

import cel
import structlog

from detector.contracts import (
    LIST_FIELDS,
    LIST_NAMES,
    Control,
    DecisionKind,
    ListEntry,
    PolicyMode,
    PolicyStatus,
    Rule,
    RuleStatus,
    Transaction,
)
from detector.expressions import activation, compile_expression, evaluate, used_variables
from detector.reasons import percent

log = structlog.get_logger(__name__)

POLICY_ACTIONS = frozenset(
    ("put_rule", "delete_rule", "put_list_entry", "delete_list_entry", "set_mode")
)
SEVERITY: dict[DecisionKind, int] = {"allow": 0, "review": 1, "block": 2}
# How reasons name the field a list holds.
FIELD_WORDS = {"card_id": "card", "terminal_id": "terminal", "device_id": "device"}
_LISTS = tuple((f"allow.{name}", f"block.{name}", name) for name in LIST_FIELDS)


@dataclass(slots=True)
class PolicyOutcome:
    """The final decision on one transaction, and what the policy did to it."""

    decision: DecisionKind
    reasons: list[str]  # list and rule hits (and a degraded decision's note): first
    valves: list[str] = field(default_factory=list)  # what the valves did: after the model's
    degraded: bool = False
    rule_hits: list[tuple[str, str]] = field(default_factory=list)  # (rule, active|shadow)
    rule_errors: list[str] = field(default_factory=list)
    list_hit: str | None = None
    capped: bool = False


@dataclass(slots=True)
class _Compiled:
    active: list[tuple[Rule, cel.Program]]
    shadow: list[tuple[Rule, cel.Program]]
    names: tuple[str, ...]


def _until(entry: ListEntry | Rule) -> str:
    parts = []
    if entry.expires_at is not None:
        at = entry.expires_at
        parts.append(
            f"until {at:%Y-%m-%d}"
            if (at.hour, at.minute) == (0, 0)
            else f"until {at:%Y-%m-%d %H:%M %Z}"
        )
    if entry.note:
        parts.append(entry.note)
    return f" ({', '.join(parts)})" if parts else ""


class Policy:
    """Rules, lists, the global mode and the block cap of one model shard."""

    def __init__(self, max_block_share: float = 1.0, block_window: int = 1000) -> None:
        self.rules: dict[str, Rule] = {}
        self.lists: dict[str, dict[str, ListEntry]] = {name: {} for name in LIST_NAMES}
        self.mode: PolicyMode = "normal"
        self.max_block_share = max_block_share
        self.block_window = block_window
        self._recent: collections.deque[bool] = collections.deque(maxlen=block_window)
        self._blocks = 0  # blocks among _recent
        self.rule_hits: collections.Counter[str] = collections.Counter()
        self.rule_errors: collections.Counter[str] = collections.Counter()
        self.list_hits: collections.Counter[str] = collections.Counter()
        self.blocks_capped = 0
        self.degraded = 0
        self._next_expiry = math.inf
        self._compiled: _Compiled | None = None
        self._logged: set[str] = set()

    # --- pickling: compiled programs stay out of snapshots --------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_compiled"] = None
        state["_logged"] = set()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def configure(self, max_block_share: float, block_window: int) -> None:
        """Follow the configuration (after a restart with other settings)."""
        self.max_block_share = max_block_share
        if block_window != self.block_window:
            self.block_window = block_window
            self._recent = collections.deque(self._recent, maxlen=block_window)
            self._blocks = sum(self._recent)

    # --- controls -------------------------------------------------------------------------

    def apply(self, control: Control) -> None:
        """Apply a policy control; ``ExpressionError`` (a ValueError) for a bad rule."""
        if control.action == "put_rule":
            assert control.rule is not None
            rule = control.rule
            compile_expression(rule.expression)  # refuse before changing anything
            previous = self.rules.get(rule.name)
            if previous is not None and previous.expression != rule.expression:
                self.rule_hits.pop(rule.name, None)  # hits count the expression in force
                self.rule_errors.pop(rule.name, None)
            self.rules[rule.name] = rule
        elif control.action == "delete_rule":
            assert control.rule_name is not None
            self.rules.pop(control.rule_name, None)
        elif control.action == "put_list_entry":
            entry = control.list_entry
            assert entry is not None
            self.lists[entry.list_name][entry.value] = entry
        elif control.action == "delete_list_entry":
            assert control.list_name is not None and control.list_value is not None
            self.lists[control.list_name].pop(control.list_value, None)
        elif control.action == "set_mode":
            assert control.mode is not None
            self.mode = control.mode
        else:
            raise ValueError(f"{control.action} is not a policy control")
        self._changed()

    def _changed(self) -> None:
        self._compiled = None
        for counter in (self.rule_hits, self.rule_errors):  # of rules gone: bounded state
            for name in [n for n in counter if n not in self.rules]:
                del counter[name]
        expiries = [r.expires_at for r in self.rules.values() if r.expires_at is not None]
        expiries += [
            e.expires_at
            for entries in self.lists.values()
            for e in entries.values()
            if e.expires_at is not None
        ]
        self._next_expiry = min((at.timestamp() for at in expiries), default=math.inf)

    def purge(self, now: float) -> None:
        """Drop the rules and entries expired at ``now`` (epoch seconds)."""
        self.rules = {
            n: r
            for n, r in self.rules.items()
            if r.expires_at is None or r.expires_at.timestamp() > now
        }
        for name, entries in self.lists.items():
            self.lists[name] = {
                v: e
                for v, e in entries.items()
                if e.expires_at is None or e.expires_at.timestamp() > now
            }
        self._changed()

    def _programs(self) -> _Compiled:
        if self._compiled is None:
            active: list[tuple[Rule, cel.Program]] = []
            shadow: list[tuple[Rule, cel.Program]] = []
            for name in sorted(self.rules):
                rule = self.rules[name]
                (active if rule.mode == "active" else shadow).append(
                    (rule, compile_expression(rule.expression))
                )
            names = used_variables(p for _, p in (*active, *shadow))
            self._compiled = _Compiled(active, shadow, names)
        return self._compiled

    # --- deciding -------------------------------------------------------------------------

    def decide(
        self,
        tx: Transaction,
        features: dict[str, float],
        model_decision: DecisionKind | None,
        *,
        now: float,
    ) -> PolicyOutcome:
        """The final decision on ``tx``: ``model_decision`` is the model's under its
        thresholds, or None when its score is unusable (``degraded``)."""
        if now >= self._next_expiry:
            self.purge(now)
        out = PolicyOutcome(decision=model_decision or "allow", reasons=[])
        listed = self._lists(tx, out)
        # Every rule is evaluated, so that its hits count what it matches, whatever decides.
        decided = self._rules(tx, features, out, decide=not listed) or listed
        if model_decision is None:
            out.degraded = True
            self.degraded += 1
            out.reasons.append(
                "model score unusable: decided by rules and lists alone"
                if decided
                else "model score unusable: allowed (no rule or list entry matched)"
            )
        self._valves(out)
        return out

    def _lists(self, tx: Transaction, out: PolicyOutcome) -> bool:
        for kind in (0, 1):  # every allow list before any block list
            for names in _LISTS:
                value = getattr(tx, names[2])
                if value is None:
                    continue
                entry = self.lists[names[kind]].get(value)
                if entry is None:
                    continue
                out.decision = "allow" if kind == 0 else "block"
                out.list_hit = entry.list_name
                self.list_hits[entry.list_name] += 1
                word = FIELD_WORDS.get(names[2], names[2])
                out.reasons.append(
                    f"on {'allow' if kind == 0 else 'block'} list: {word} {value}{_until(entry)}"
                )
                return True
        return False

    def _rules(
        self, tx: Transaction, features: dict[str, float], out: PolicyOutcome, *, decide: bool
    ) -> bool:
        if not self.rules:
            return False
        compiled = self._programs()
        context = cel.Context(activation(tx, features, compiled.names))
        for rule, program in compiled.shadow:
            if self._matches(rule, program, context, out):
                out.rule_hits.append((rule.name, "shadow"))
        strongest: Rule | None = None
        for rule, program in compiled.active:
            if self._matches(rule, program, context, out):
                out.rule_hits.append((rule.name, "active"))
                if strongest is None or SEVERITY[rule.outcome] > SEVERITY[strongest.outcome]:
                    strongest = rule
        if strongest is None or not decide:
            return False
        out.decision = strongest.outcome
        out.reasons.append(f"rule {strongest.name}: {strongest.outcome}{_until(strongest)}")
        return True

    def _matches(
        self, rule: Rule, program: cel.Program, context: cel.Context, out: PolicyOutcome
    ) -> bool:
        try:
            matched = evaluate(program, context)
        except Exception as error:  # a rule never stops the detector: not matched
            self.rule_errors[rule.name] += 1
            out.rule_errors.append(rule.name)
            if rule.name not in self._logged:
                self._logged.add(rule.name)
                log.warning("rule failed", rule=rule.name, error=str(error)[:300])
            return False
        if matched:
            self.rule_hits[rule.name] += 1
        return matched

    def _valves(self, out: PolicyOutcome) -> None:
        if (
            out.decision == "block"
            and self.mode == "normal"
            and self.max_block_share < 1.0
            and self.cap_tripped
        ):
            share = self.block_share
            out.decision, out.capped = "review", True
            self.blocks_capped += 1
            out.valves.append(
                f"blocks capped: {percent(share)} of the last {self.block_window:,} decisions "
                f"were blocks, at or above the {percent(self.max_block_share)} cap: review instead"
            )
        if self.mode == "review_only" and out.decision == "block":
            out.decision = "review"
            out.valves.append("review-only mode: would have blocked")
        elif self.mode == "monitor" and out.decision != "allow":
            would = "blocked" if out.decision == "block" else "reviewed"
            out.decision = "allow"
            out.valves.append(f"monitor mode: would have {would}")
        self._record(out.decision == "block")

    def _record(self, blocked: bool) -> None:
        if len(self._recent) == self._recent.maxlen:
            self._blocks -= self._recent[0]
        self._recent.append(blocked)
        self._blocks += blocked

    @property
    def block_share(self) -> float:
        """Blocks in the last ``block_window`` decisions, as a share of the window."""
        return self._blocks / self.block_window

    @property
    def cap_tripped(self) -> bool:
        """True when one more block would go past the cap."""
        return self._blocks + 1 > self.max_block_share * self.block_window

    # --- status ---------------------------------------------------------------------------

    def status(self) -> PolicyStatus:
        return PolicyStatus(
            mode=self.mode,
            rules=[
                RuleStatus(rule=rule, hits=self.rule_hits[name], errors=self.rule_errors[name])
                for name, rule in sorted(self.rules.items())
            ],
            list_sizes={name: len(entries) for name, entries in self.lists.items()},
            list_hits=dict(self.list_hits),
            max_block_share=self.max_block_share,
            block_window=self.block_window,
            block_share=self.block_share,
            block_cap_tripped=self.cap_tripped,
            blocks_capped=self.blocks_capped,
            degraded=self.degraded,
        )


def merge_policy(statuses: list[PolicyStatus]) -> PolicyStatus:
    """One policy status over every model shard: the rules, lists and mode are the same
    in every shard (controls reach them all); counts add up; the block cap is per shard
    (the share is the shards' average; tripped when any shard's is)."""
    first = statuses[0]
    if len(statuses) == 1:
        return first
    hits: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    list_hits: collections.Counter[str] = collections.Counter()
    for status in statuses:
        for rs in status.rules:
            hits[rs.rule.name] += rs.hits
            errors[rs.rule.name] += rs.errors
        list_hits.update(status.list_hits)
    return first.model_copy(
        update={
            "rules": [
                RuleStatus(rule=rs.rule, hits=hits[rs.rule.name], errors=errors[rs.rule.name])
                for rs in first.rules
            ],
            "list_hits": dict(list_hits),
            "block_share": sum(s.block_share for s in statuses) / len(statuses),
            "block_cap_tripped": any(s.block_cap_tripped for s in statuses),
            "blocks_capped": sum(s.blocks_capped for s in statuses),
            "degraded": sum(s.degraded for s in statuses),
        }
    )
