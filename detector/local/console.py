"""Short lines for ``fraudstream up``: its processes' JSON logs, as one person reads them.

Each process writes JSON log lines to ``up``, which shows every event on one line: the
time of day, the level if above info, the event and its fields. An alert reads
``07:14:18 alert review 0.027 sim-448599-115 amount 161.65 rarer than 73.3% of past
transactions`` (decision, score, transaction, strongest reason). Lines that are not JSON
(uvicorn's and the standard library's own) pass unchanged.
"""

from __future__ import annotations

import json
from typing import Any

# Fields every line carries, shown in front or not at all.
_FRAME = ("timestamp", "level", "event", "logger")
MAX_VALUE_CHARS = 120


def short_line(raw: str) -> str:
    """``raw`` as a short line, if it is a structured log event; else ``raw`` itself."""
    if not raw.startswith("{"):
        return raw
    try:
        event = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(event, dict) or "event" not in event:
        return raw
    clock = str(event.get("timestamp", ""))[11:19]
    level = str(event.get("level", "info"))
    head = [clock] if clock else []
    if level not in ("info", "debug"):
        head.append(level.upper())
    head.append(str(event["event"]))
    fields = {k: v for k, v in event.items() if k not in _FRAME}
    trace = fields.pop("exception", None)
    if event["event"] == "alert":
        body = _alert(fields)
    else:
        body = [f"{key}={_value(value)}" for key, value in fields.items()]
    line = " ".join([*head, *body])
    return f"{line}\n{trace.rstrip()}" if isinstance(trace, str) else line


def _alert(fields: dict[str, Any]) -> list[str]:
    score = fields.pop("score", None)
    parts = [
        str(fields.pop("decision", "?")),
        _value(score),
        str(fields.pop("transaction_id", "?")),
    ]
    reason = fields.pop("reason", None)
    if reason:
        parts.append(str(reason))
    return parts + [f"{key}={_value(value)}" for key, value in fields.items()]


def _value(value: Any) -> str:
    text = (
        value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    )
    if text == "" or any(c.isspace() for c in text):
        text = json.dumps(text)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"
