"""Progress bars for long jobs (publishing, replays)."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

REFRESH_SECONDS = 0.1


class RateColumn(ProgressColumn):
    """Records per second, smoothed by rich."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f}/s" if speed is not None else "-/s", style="progress.data.speed")


class ProgressBar:
    """A context manager giving a ``tick()`` that advances a rich bar, or does nothing."""

    def __init__(self, description: str, *, enabled: bool = True, total: int | None = None) -> None:
        self._progress: Progress | None = None
        self._pending = 0
        self._last_update = 0.0
        if enabled:
            counter = TextColumn("{task.completed:,}") if total is None else MofNCompleteColumn()
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("[progress.description]{task.description}"),
                *([] if total is None else [BarColumn(), TaskProgressColumn()]),
                counter,
                RateColumn(),
                TimeElapsedColumn(),
            )
            self._task = self._progress.add_task(description, total=total)

    def __enter__(self) -> Callable[[], None]:
        if self._progress is not None:
            self._progress.start()
        return self._tick

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=self._pending)
            self._progress.stop()

    def _tick(self) -> None:
        if self._progress is None:
            return
        # rich takes a lock per update: a few updates a second are enough for the eye.
        self._pending += 1
        now = time.monotonic()
        if now - self._last_update >= REFRESH_SECONDS:
            self._progress.update(self._task, advance=self._pending)
            self._pending = 0
            self._last_update = now
