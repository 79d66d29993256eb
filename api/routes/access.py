"""Who holds the presented key."""

from __future__ import annotations

from api.deps import Viewer
from api.routes.common import api_router
from api.schemas import Me

router = api_router("access")


@router.get("/me", summary="Who am I", response_model=Me)
def me(principal: Viewer) -> Me:
    """The holder of the key and its role: what the page shows and allows."""
    return Me(name=principal.name, role=principal.role.name)
