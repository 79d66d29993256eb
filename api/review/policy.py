"""Rules, allow and block lists and the global mode: admins' changes, checked, audited and
sent to the detector on the control topic.

What is in force is read back from the control history (``control_events``): the
detector applies the same controls in the same order, so both agree without a table of
their own. Expired rules and entries are left out, as the detector drops them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy import select

from api.review.control import record_control
from api.review.errors import Invalid, NotFound
from api.review.records import Context
from api.schemas import ControlAccepted
from api.tables import ControlEventRecord
from detector.contracts import LIST_NAMES, Control, ListEntry, PolicyMode, Rule
from detector.expressions import ExpressionError, check_expression
from detector.policy import POLICY_ACTIONS


@dataclass
class PolicyInForce:
    """The rules, lists and mode the controls sent so far make."""

    rules: dict[str, Rule] = field(default_factory=dict)
    lists: dict[str, dict[str, ListEntry]] = field(
        default_factory=lambda: {name: {} for name in LIST_NAMES}
    )
    mode: PolicyMode = "normal"


def policy_in_force(ctx: Context) -> PolicyInForce:
    """Replay the policy controls of the history, oldest first; leave out what expired."""
    query = (
        select(ControlEventRecord.details)
        .where(ControlEventRecord.action.in_(sorted(POLICY_ACTIONS)))
        .order_by(ControlEventRecord.id)
    )
    policy = PolicyInForce()
    for details in ctx.session.scalars(query):
        control = Control.model_validate(details, strict=False)
        if control.rule is not None:
            policy.rules[control.rule.name] = control.rule
        elif control.action == "delete_rule" and control.rule_name is not None:
            policy.rules.pop(control.rule_name, None)
        elif control.list_entry is not None:
            policy.lists[control.list_entry.list_name][control.list_entry.value] = (
                control.list_entry
            )
        elif control.action == "delete_list_entry" and control.list_name is not None:
            policy.lists[control.list_name].pop(control.list_value or "", None)
        elif control.mode is not None:
            policy.mode = control.mode
    now = ctx.now()
    policy.rules = {
        name: rule
        for name, rule in sorted(policy.rules.items())
        if rule.expires_at is None or rule.expires_at > now
    }
    for name, entries in policy.lists.items():
        policy.lists[name] = {
            value: entry
            for value, entry in sorted(entries.items())
            if entry.expires_at is None or entry.expires_at > now
        }
    return policy


def _send(ctx: Context, actor: str, **change: object) -> ControlAccepted:
    try:
        control = Control.model_validate(
            {
                "control_id": str(uuid.uuid4()),
                "requested_by": actor,
                "requested_at": ctx.now(),
                **change,
            },
            strict=False,
        )
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'][1:])) or 'value'}: {e['msg']}" for e in error.errors()
        )
        raise Invalid(problems) from None
    record_control(ctx, control=control)
    return ControlAccepted(control_id=control.control_id, action=control.action)


def _future(ctx: Context, expires_at: datetime | None) -> None:
    if expires_at is not None and expires_at <= ctx.now():
        raise Invalid(f"expires_at {expires_at.isoformat()} is not in the future")


def put_rule(
    ctx: Context,
    *,
    actor: str,
    name: str,
    expression: str,
    outcome: str,
    mode: str,
    expires_at: datetime | None,
    note: str | None,
) -> ControlAccepted:
    """Add or replace rule ``name``; an expression that does not compile, or names an
    unknown variable, is ``Invalid`` with the parser's message (line and column)."""
    try:
        check_expression(expression)
    except ExpressionError as error:
        raise Invalid(f"rule {name}: invalid expression: {error}") from None
    _future(ctx, expires_at)
    rule = {
        "name": name,
        "expression": expression,
        "outcome": outcome,
        "mode": mode,
        "expires_at": expires_at,
        "note": note,
        "changed_by": actor,
        "changed_at": ctx.now(),
    }
    return _send(ctx, actor, action="put_rule", rule=rule)


def delete_rule(ctx: Context, *, actor: str, name: str) -> ControlAccepted:
    if name not in policy_in_force(ctx).rules:
        raise NotFound(f"no rule {name}")
    return _send(ctx, actor, action="delete_rule", rule_name=name)


def put_list_entry(
    ctx: Context,
    *,
    actor: str,
    list_name: str,
    value: str,
    expires_at: datetime | None,
    note: str | None,
) -> ControlAccepted:
    if value != value.strip():
        raise Invalid(f"the value {value!r} starts or ends with spaces")
    _future(ctx, expires_at)
    entry = {
        "list_name": list_name,
        "value": value,
        "expires_at": expires_at,
        "note": note,
        "changed_by": actor,
        "changed_at": ctx.now(),
    }
    return _send(ctx, actor, action="put_list_entry", list_entry=entry)


def delete_list_entry(ctx: Context, *, actor: str, list_name: str, value: str) -> ControlAccepted:
    if value not in policy_in_force(ctx).lists[list_name]:
        raise NotFound(f"{value} is not on list {list_name}")
    return _send(ctx, actor, action="delete_list_entry", list_name=list_name, list_value=value)


def set_mode(ctx: Context, *, actor: str, mode: str) -> ControlAccepted:
    return _send(ctx, actor, action="set_mode", mode=mode)
