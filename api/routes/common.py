"""What every router of the API shares: the ``/api`` prefix, the key it needs, and the
error answers it documents in OpenAPI (every one is ``{"detail": "..."}``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends

from api.auth import Role
from api.deps import require
from api.schemas import ErrorOut

_DESCRIPTIONS = {
    401: "No API key, or a key that is not valid (header ``WWW-Authenticate: APIKey``).",
    403: "The key's role may not do this.",
    404: "No such alert or model.",
    409: "The alert's state forbids this: claimed by someone else, changed meanwhile, or "
    "already decided with another label.",
    422: "The request is malformed: a bad parameter or body.",
}
AUTH = (401, 403)
# A route function, as a decorator of routes hands it back.
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the error answers ``codes``."""
    return {code: {"model": ErrorOut, "description": _DESCRIPTIONS[code]} for code in codes}


def api_router(tag: str) -> APIRouter:
    """A router under ``/api``, documented under ``tag``, whose every route needs at least
    a viewer's key (routes needing more ask for it)."""
    return APIRouter(
        prefix="/api",
        tags=[tag],
        dependencies=[Depends(require(Role.viewer))],
        responses=errors(*AUTH, 422),
    )
