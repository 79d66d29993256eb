"""What the review rules refuse; ``str(error)`` is a message for people."""

from __future__ import annotations

from typing import ClassVar

from api.schemas import ErrorKind


class ReviewError(Exception):
    """A request the review rules refuse; ``kind`` says which refusal (for HTTP codes)."""

    kind: ClassVar[ErrorKind | None] = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ReviewError):
    """No such alert (or model, or control)."""

    kind: ClassVar[ErrorKind | None] = "not_found"


class Conflict(ReviewError):
    """The alert's state forbids the change: claimed by someone else, changed meanwhile,
    or already decided otherwise."""

    kind: ClassVar[ErrorKind | None] = "conflict"


class Invalid(ReviewError):
    """The request itself is malformed: a bad label, filter, sort or note."""

    kind: ClassVar[ErrorKind | None] = "invalid"
