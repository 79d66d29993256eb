"""Raw Kafka records in, valid events or dead letters out."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from detector.contracts import Control, Label, RejectReason, Transaction


def describe_errors(
    errors: Sequence[Mapping[str, Any]], *, limit: int = 5, whole: str = "record"
) -> str:
    """The one readable form of pydantic validation errors: ``where: what; ...``.

    ``errors`` is ``ValidationError.errors()`` (or FastAPI's ``RequestValidationError``);
    at most ``limit`` problems are named, then how many more there are.
    """
    parts = []
    for item in errors[:limit]:
        where = ".".join(str(p) for p in item.get("loc", ())) or whole
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    text = "; ".join(parts)
    return f"{text} (and {len(errors) - limit} more)" if len(errors) > limit else text


def _describe(error: ValidationError) -> str:
    return describe_errors(error.errors(include_url=False))


def parse_event(
    value: bytes | None,
    kind: type[Transaction] | type[Label],
    *,
    max_bytes: int,
    max_clock_skew: timedelta,
    now: datetime | None = None,
) -> Transaction | Label | tuple[RejectReason, str]:
    """Parse one record as ``kind``; on failure return the reason and a readable error."""
    event = _parse(value, kind, max_bytes)
    if isinstance(event, tuple):
        return event
    assert not isinstance(event, Control)
    when = event.timestamp if isinstance(event, Transaction) else event.labeled_at
    latest = (now or datetime.now(UTC)) + max_clock_skew
    if when > latest:
        return (
            RejectReason.FUTURE_TIMESTAMP,
            f"timestamp {when.isoformat()} is later than now plus {max_clock_skew}",
        )
    return event


def parse_control(value: bytes | None, *, max_bytes: int) -> Control | tuple[RejectReason, str]:
    """Parse a control record; on failure return the reason and a readable error.

    Its ``requested_at`` is not checked against the clock: an admin's change applies
    whatever the clock of the machine that sent it says.
    """
    parsed = _parse(value, Control, max_bytes)
    assert isinstance(parsed, Control | tuple)
    return parsed


def _parse(
    value: bytes | None,
    kind: type[Transaction] | type[Label] | type[Control],
    max_bytes: int,
) -> Transaction | Label | Control | tuple[RejectReason, str]:
    if value is None:
        return RejectReason.INVALID, "empty record (no value)"
    if len(value) > max_bytes:
        return RejectReason.OVERSIZE, f"record of {len(value)} bytes exceeds {max_bytes} bytes"
    try:
        return kind.model_validate_json(value)
    except ValidationError as error:
        if any(e["type"] == "json_invalid" for e in error.errors()):
            return RejectReason.NOT_JSON, _not_json_detail(value)
        return RejectReason.INVALID, _describe(error)


def _not_json_detail(value: bytes) -> str:
    try:
        json.loads(value)
    except (ValueError, UnicodeDecodeError) as error:
        return f"not valid JSON: {error}"
    except RecursionError:
        return "not valid JSON: nested too deeply"
    return "not a JSON object"
