"""Structured logs: pretty on a terminal, JSON lines elsewhere."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import structlog
from structlog.typing import EventDict


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


REQUEST_FIELDS = frozenset({"method", "path", "status"})


def _drop_request_lines(_logger: object, _name: str, event: EventDict) -> EventDict:
    """Leave out the review service's line per HTTP request (``FRAUDSTREAM_LOG_REQUESTS``)."""
    if event.get("event") == "request" and event.keys() >= REQUEST_FIELDS:
        raise structlog.DropEvent
    return event


def configure_logging(level: str = "INFO", fmt: str = "auto", requests: bool = True) -> None:
    """Set up structlog and the standard library logging behind it.

    ``requests=False`` leaves out the line per HTTP request, unless ``level`` is DEBUG.
    """
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    quiet: list[structlog.typing.Processor] = (
        [] if requests or numeric <= logging.DEBUG else [_drop_request_lines]
    )
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            *quiet,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=numeric, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )


@dataclass
class _Window:
    started: float
    written: int = 1
    held_back: int = 0


class RateLimiter:
    """At most ``limit`` lines per ``interval`` seconds for each kind of message.

    ``allow(kind)`` says whether a line of that kind may be written now and, if so, how
    many of its kind were held back in the previous interval (to report with it).
    Thread-safe: Kafka clients call back from whichever thread polls them.
    """

    def __init__(
        self, limit: int, interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1 or interval <= 0:
            raise ValueError(f"need limit >= 1 and interval > 0, got {limit} and {interval}")
        self.limit = limit
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[Hashable, _Window] = {}

    def allow(self, kind: Hashable) -> tuple[bool, int]:
        now = self._clock()
        with self._lock:
            window = self._windows.get(kind)
            if window is None or now - window.started >= self.interval:
                self._windows[kind] = _Window(started=now)
                return True, window.held_back if window is not None else 0
            if window.written < self.limit:
                window.written += 1
                return True, 0
            window.held_back += 1
            return False, 0
