"""The live queue: a stream of changes (Server-Sent Events) for the page, opened with a
short-lived token because a browser's EventSource cannot send the key's header."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.auth import STREAM_TOKEN_HINT, Principal, Role, StreamTokens, identify, keyring_of
from api.deps import Viewer, _api_key_header
from api.live import Hub
from api.metrics import ApiMetrics
from api.routes.common import AUTH, api_router, errors

router = api_router("events")
# The stream is opened with the key's header or, from a browser, with a token.
stream = APIRouter(prefix="/api", tags=["events"], responses=errors(*AUTH, 422))
# Comment lines this often keep proxies and load balancers from closing an idle stream.
HEARTBEAT_SECONDS = 15
# How long a browser waits before it reconnects a dropped stream.
RETRY_MS = 3000


class StreamTokenOut(BaseModel):
    """A token that opens one event stream: ``GET /api/events?token=...``."""

    token: str = Field(description="Opens a stream until expires_at; then mint another.")
    expires_at: datetime


def _tokens(request: Request) -> StreamTokens:
    tokens: StreamTokens = request.app.state.stream_tokens
    return tokens


@router.get(
    "/events/token", summary="A token to open the event stream", response_model=StreamTokenOut
)
def stream_token(principal: Viewer, request: Request) -> StreamTokenOut:
    """Trade the key (in its header) for a token that opens ``GET /api/events`` within a
    minute; the key itself never goes into a URL. Viewers may stream, so this is a read:
    minting changes nothing on the server."""
    token, expires = _tokens(request).mint(principal)
    return StreamTokenOut(token=token, expires_at=datetime.fromtimestamp(expires, UTC))


@stream.get(
    "/events",
    summary="Live changes (Server-Sent Events)",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "The stream."},
    },
)
async def events(
    request: Request,
    # Checked by ``verify`` (length included), so every refusal is a 401 with a reason.
    token: Annotated[str | None, Query(description="From GET /api/events/token.")] = None,
    last_event_id: Annotated[str | None, Header()] = None,
    key: Annotated[str | None, Depends(_api_key_header)] = None,
) -> EventSourceResponse:
    """Events ``alert`` (received, claimed, released, decided, reopened), ``models`` (a model
    status arrived), ``control`` (an admin change) and ``resync`` (events were lost: reload
    everything), each with an id; a comment line every 15 s keeps the stream open.

    Open it with ``?token=`` from ``GET /api/events/token``: a browser's EventSource
    cannot send the key's header, and the key must never be in a URL. A missing, invalid or
    expired token is a 401 that says so; a key sent in the header is checked as on every
    route, but does not open the stream by itself (422)."""
    if key is not None:
        _check_role(identify(keyring_of(request), key))
        if token is None:
            raise HTTPException(
                422, f"the stream opens with ?token=: {STREAM_TOKEN_HINT}, then connect at once"
            )
    _check_role(_tokens(request).verify(token))
    hub: Hub = request.app.state.hub
    metrics: ApiMetrics = request.app.state.metrics
    # A browser reconnecting with an id this stream did not just send may have missed
    # events (it was away, or it was served by another process): it reloads.
    missed = last_event_id is not None and last_event_id != hub.last_id
    return EventSourceResponse(
        _stream(hub, metrics, resync=missed),
        ping=HEARTBEAT_SECONDS,
        headers={"X-Accel-Buffering": "no"},  # nginx: pass each event on at once
    )


def _check_role(principal: Principal) -> None:
    if principal.role < Role.viewer:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"this needs the viewer role; {principal.name} is {principal.role.name}",
        )


async def _stream(hub: Hub, metrics: ApiMetrics, *, resync: bool) -> AsyncIterator[ServerSentEvent]:
    metrics.event_streams.inc()
    try:
        with hub.subscribe() as subscription:
            first = hub.resync() if resync else None
            yield ServerSentEvent(
                json.dumps(first.data if first else {}),
                event=first.kind if first else "ready",
                id=first.id if first else hub.last_id,
                retry=RETRY_MS,
            )
            while True:
                event = await subscription.next()
                yield ServerSentEvent(json.dumps(event.data), event=event.kind, id=event.id)
    finally:
        metrics.event_streams.dec()
