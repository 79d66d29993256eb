"""Save and load trained models for offline analysis, with a version guard.

A model file is one line of JSON (the header: what the file holds and which versions
wrote it) followed by the pickled object. ``load_model`` reads and checks the header
before it unpickles anything, so a file written by another River version or another
fraudstream model version is refused with a clear message instead of failing somewhere
deep inside River, or worse, loading into subtly different classes.

.. warning::

   Unpickling runs code chosen by whoever wrote the file. Load only model files you
   wrote yourself or otherwise trust, and never accept a model file over the network:
   the API never does. The header check guards against *accidents* (version drift, the
   wrong file), not against a malicious file; neither does the payload checksum, which
   only catches truncated or corrupted files.

This is the one module of ``models`` that does file I/O: it is where models are saved.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import platform
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, overload

import river

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "IncompatibleModelError",
    "ModelHeader",
    "load_model",
    "read_header",
    "save_model",
]

FORMAT = "fraudstream-model"
FORMAT_VERSION = 1
# A header is a few hundred bytes; anything without a newline this early is no model file.
MAX_HEADER_BYTES = 64 * 1024

T = TypeVar("T")


class IncompatibleModelError(ValueError):
    """The file is not a fraudstream model, or one this installation must not load."""


@dataclass(frozen=True, slots=True)
class ModelHeader:
    """What a model file says about itself (read without unpickling anything)."""

    format_version: int
    model_version: str
    river_version: str
    python_version: str
    saved_at: datetime
    object_class: str
    payload_sha256: str

    def to_json(self) -> str:
        """The header as one line of JSON (with the format marker)."""
        fields = asdict(self)
        fields["saved_at"] = self.saved_at.isoformat()
        return json.dumps({"format": FORMAT, **fields}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, source: str = "model file") -> ModelHeader:
        """Parse a header line; raise ``IncompatibleModelError`` if it is not one."""
        not_a_model = f"{source} is not a fraudstream model file"
        try:
            data = json.loads(text)
        except ValueError as error:
            raise IncompatibleModelError(f"{not_a_model} (no JSON header)") from error
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise IncompatibleModelError(f"{not_a_model} (no {FORMAT!r} format marker)")
        if data.get("format_version") != FORMAT_VERSION:
            raise IncompatibleModelError(
                f"{source} has model file format version {data.get('format_version')!r}; "
                f"this fraudstream reads format version {FORMAT_VERSION}"
            )
        try:
            return cls(
                format_version=int(data["format_version"]),
                model_version=str(data["model_version"]),
                river_version=str(data["river_version"]),
                python_version=str(data["python_version"]),
                saved_at=datetime.fromisoformat(str(data["saved_at"])),
                object_class=str(data["object_class"]),
                payload_sha256=str(data["payload_sha256"]),
            )
        except (KeyError, ValueError) as error:
            raise IncompatibleModelError(f"{source} has a damaged header: {error!r}") from error


def _class_path(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def save_model(obj: object, path: Path, *, model_version: str) -> None:
    """Write ``obj`` to ``path`` as a header line plus its pickle, atomically.

    The file appears complete or not at all (a temporary file in the same directory is
    renamed over ``path``), readable by its owner only (mode 0600). ``obj`` must be
    picklable: no open files, sockets or locks.
    """
    path = Path(path)
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    header = ModelHeader(
        format_version=FORMAT_VERSION,
        model_version=model_version,
        river_version=river.__version__,
        python_version=platform.python_version(),
        saved_at=datetime.now(UTC),
        object_class=_class_path(obj),
        payload_sha256=hashlib.sha256(payload).hexdigest(),
    )
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header.to_json().encode() + b"\n")
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _read_header_line(f: Any, path: Path) -> ModelHeader:
    line = f.readline(MAX_HEADER_BYTES)
    if not line.endswith(b"\n"):
        raise IncompatibleModelError(f"{path} is not a fraudstream model file (no header line)")
    try:
        text = line.decode()
    except UnicodeDecodeError as error:
        raise IncompatibleModelError(
            f"{path} is not a fraudstream model file (no JSON header)"
        ) from error
    return ModelHeader.from_json(text, source=str(path))


def read_header(path: Path) -> ModelHeader:
    """The header of a model file, without unpickling anything (safe on any file)."""
    path = Path(path)
    with path.open("rb") as f:
        return _read_header_line(f, path)


def check_compatible(header: ModelHeader, *, model_version: str, source: str = "model") -> None:
    """Raise ``IncompatibleModelError`` unless this installation may load ``header``'s file."""
    if header.river_version != river.__version__:
        raise IncompatibleModelError(
            f"{source} was saved with River {header.river_version}, but River "
            f"{river.__version__} is installed: retrain the model, or load it with River "
            f"{header.river_version}"
        )
    if header.model_version != model_version:
        raise IncompatibleModelError(
            f"{source} was saved by fraudstream {header.model_version}, but fraudstream "
            f"{model_version} is expected: retrain the model with this version"
        )


@overload
def load_model(path: Path, *, model_version: str, expected_type: type[T]) -> T: ...
@overload
def load_model(path: Path, *, model_version: str, expected_type: None = None) -> object: ...
def load_model(path: Path, *, model_version: str, expected_type: type | None = None) -> object:
    """Load a model saved by ``save_model``, refusing incompatible files before unpickling.

    The header is read and checked first: the file must be a fraudstream model (format
    version 1), saved with the River version installed here and with ``model_version``.
    Only then is the payload checked against its SHA-256 and unpickled; with
    ``expected_type``, the result must be an instance of it. Every refusal raises
    ``IncompatibleModelError`` (a ``ValueError``) naming both versions where versions
    differ.

    **Pickle runs code**: load only files you trust (ones you saved yourself), and
    never accept a model file over the network; the API never does.
    """
    path = Path(path)
    with path.open("rb") as f:
        header = _read_header_line(f, path)
        check_compatible(header, model_version=model_version, source=str(path))
        payload = f.read()
    if hashlib.sha256(payload).hexdigest() != header.payload_sha256:
        raise IncompatibleModelError(f"{path} is truncated or corrupted (checksum mismatch)")
    obj = pickle.loads(payload)
    if expected_type is not None and not isinstance(obj, expected_type):
        raise IncompatibleModelError(
            f"{path} holds a {_class_path(obj)}, not a "
            f"{expected_type.__module__}.{expected_type.__qualname__}"
        )
    return obj
