"""Rules, allow and block lists and the global mode (admin): read what is in force, and
change it; changes go to the running detector on the control topic (202 once queued)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import HTTPException, Path, status

from api import live, review
from api.deps import Admin, ReviewDep
from api.fields import NAME_MAX
from api.review import policy
from api.routes.common import Endpoint, api_router, errors
from api.schemas import (
    NO_CONTROL,
    ControlAccepted,
    ListEntryIn,
    ModeIn,
    PolicyOut,
    RuleIn,
)
from detector.contracts import ListEntry, ListName, Rule

router = api_router("policy")
RuleNamePath = Annotated[
    str,
    Path(
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$",
        description="Lower-case letters, digits, '.', '_' and '-'; at most 64.",
    ),
]
ListPath = Annotated[
    ListName, Path(description="allow. or block. and card_id, terminal_id, device_id, country.")
]
ValuePath = Annotated[str, Path(min_length=1, max_length=NAME_MAX, pattern=NO_CONTROL)]


def _change(
    method: Callable[..., Callable[[Endpoint], Endpoint]], path: str, summary: str, *codes: int
) -> Callable[[Endpoint], Endpoint]:
    """The route of an admin's change: accepted (202) once stored and queued."""
    return method(
        path,
        summary=summary,
        status_code=status.HTTP_202_ACCEPTED,
        response_model=ControlAccepted,
        responses=errors(*codes) if codes else None,
    )


def _policy(ctx: review.Context) -> policy.PolicyInForce:
    return policy.policy_in_force(ctx)


@router.get("/policy", summary="Rules, lists and mode in force", response_model=PolicyOut)
def get_policy(principal: Admin, ctx: ReviewDep) -> PolicyOut:
    """Everything in force (admin): the mode, the rules and every list."""
    now = _policy(ctx)
    return PolicyOut(
        mode=now.mode,
        rules=list(now.rules.values()),
        lists={name: list(entries.values()) for name, entries in now.lists.items()},
    )


@router.get("/rules", summary="Rules in force", response_model=list[Rule])
def list_rules(principal: Admin, ctx: ReviewDep) -> list[Rule]:
    """The rules in force (admin), by name; their hits are in ``GET /api/models``."""
    return list(_policy(ctx).rules.values())


@router.get("/rules/{name}", summary="One rule", response_model=Rule, responses=errors(404))
def get_rule(name: RuleNamePath, principal: Admin, ctx: ReviewDep) -> Rule:
    """One rule in force (admin), or 404."""
    rule = _policy(ctx).rules.get(name)
    if rule is None:
        raise HTTPException(404, f"no rule {name}")
    return rule


@_change(router.put, "/rules/{name}", "Add or replace a rule")
@live.announces("control")
def put_rule(name: RuleNamePath, body: RuleIn, principal: Admin, ctx: ReviewDep) -> ControlAccepted:
    """Add or replace a rule (admin). An expression that does not compile, or names an
    unknown variable, is refused with 422 and the parser's message (line and column)."""
    return policy.put_rule(ctx, actor=principal.name, name=name, **body.model_dump())


@_change(router.delete, "/rules/{name}", "Remove a rule", 404)
@live.announces("control")
def delete_rule(name: RuleNamePath, principal: Admin, ctx: ReviewDep) -> ControlAccepted:
    """Remove a rule (admin); 404 when no such rule is in force."""
    return policy.delete_rule(ctx, actor=principal.name, name=name)


@router.get("/lists/{list_name}", summary="One list's entries", response_model=list[ListEntry])
def list_entries(list_name: ListPath, principal: Admin, ctx: ReviewDep) -> list[ListEntry]:
    """The entries in force on one list (admin), by value."""
    return list(_policy(ctx).lists[list_name].values())


@router.get(
    "/lists/{list_name}/{value}",
    summary="One list entry",
    response_model=ListEntry,
    responses=errors(404),
)
def get_entry(list_name: ListPath, value: ValuePath, principal: Admin, ctx: ReviewDep) -> ListEntry:
    """One entry of a list (admin), or 404."""
    entry = _policy(ctx).lists[list_name].get(value)
    if entry is None:
        raise HTTPException(404, f"{value} is not on list {list_name}")
    return entry


@_change(router.put, "/lists/{list_name}/{value}", "Put a value on a list")
@live.announces("control")
def put_entry(
    list_name: ListPath, value: ValuePath, body: ListEntryIn, principal: Admin, ctx: ReviewDep
) -> ControlAccepted:
    """Put ``value`` on an allow or block list (admin), e.g. ``block.card_id``."""
    return policy.put_list_entry(
        ctx, actor=principal.name, list_name=list_name, value=value, **body.model_dump()
    )


@_change(router.delete, "/lists/{list_name}/{value}", "Take a value off a list", 404)
@live.announces("control")
def delete_entry(
    list_name: ListPath, value: ValuePath, principal: Admin, ctx: ReviewDep
) -> ControlAccepted:
    """Take a value off a list (admin); 404 when it is not on it."""
    return policy.delete_list_entry(ctx, actor=principal.name, list_name=list_name, value=value)


@router.get("/mode", summary="The global mode", response_model=ModeIn)
def get_mode(principal: Admin, ctx: ReviewDep) -> ModeIn:
    """The global mode in force (admin)."""
    return ModeIn(mode=_policy(ctx).mode)


@_change(router.put, "/mode", "Set the global mode")
@live.announces("control")
def put_mode(body: ModeIn, principal: Admin, ctx: ReviewDep) -> ControlAccepted:
    """``normal``, ``review_only`` (blocks become reviews) or ``monitor`` (everything is
    allowed, and the reasons say what would have happened)."""
    return policy.set_mode(ctx, actor=principal.name, mode=body.mode)
