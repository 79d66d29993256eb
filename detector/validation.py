"""Raw Kafka records in, valid events or dead letters out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from detector.contracts import Label, RejectReason, Transaction


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "record"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def parse_event(
    value: bytes | None,
    kind: type[Transaction] | type[Label],
    *,
    max_bytes: int,
    max_clock_skew: timedelta,
    now: datetime | None = None,
) -> Transaction | Label | tuple[RejectReason, str]:
    """Parse one record as ``kind``; on failure return the reason and a readable error."""
    if value is None:
        return RejectReason.INVALID, "empty record (no value)"
    if len(value) > max_bytes:
        return RejectReason.OVERSIZE, f"record of {len(value)} bytes exceeds {max_bytes} bytes"
    try:
        event = kind.model_validate_json(value)
    except ValidationError as error:
        if any(e["type"] == "json_invalid" for e in error.errors()):
            return RejectReason.NOT_JSON, _not_json_detail(value)
        return RejectReason.INVALID, _describe(error)
    when = event.timestamp if isinstance(event, Transaction) else event.labeled_at
    latest = (now or datetime.now(UTC)) + max_clock_skew
    if when > latest:
        return (
            RejectReason.FUTURE_TIMESTAMP,
            f"timestamp {when.isoformat()} is later than now plus {max_clock_skew}",
        )
    return event


def _not_json_detail(value: bytes) -> str:
    try:
        json.loads(value)
    except (ValueError, UnicodeDecodeError) as error:
        return f"not valid JSON: {error}"
    return "not a JSON object"
