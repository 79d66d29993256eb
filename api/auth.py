"""API keys: who is calling, and may they do this?

Keys come from ``FRAUDSTREAM_API_KEYS`` (``role:key`` or ``role:name:key``, comma-separated)
and ``FRAUDSTREAM_API_KEYS_FILE`` (one pair per line). Only SHA-256 digests are kept in
memory, and a presented key is compared with *every* digest in constant time, so neither
timing nor a memory dump gives a key away. Keys are never logged: log lines name the
holder (``Principal.name``) instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import structlog
from fastapi import HTTPException, Request, status

from api.fields import KEY_NAME_MAX
from detector.settings import Settings

log = structlog.get_logger("fraudstream.api")

API_KEY_HEADER = "X-API-Key"


class Role(IntEnum):
    """Ordered from ``viewer`` up: a higher role may do everything a lower one may.

    ``scorer`` stands apart, below them all: a payment system's key, which may score
    transactions (``POST /api/score``) and nothing else; analysts and admins may score
    too, viewers may not (``may_score``).
    """

    scorer = 0
    viewer = 1
    analyst = 2
    admin = 3


SCORING_ROLES = frozenset({Role.scorer, Role.analyst, Role.admin})


def may_score(role: Role) -> bool:
    """Whether a key of ``role`` may score transactions synchronously."""
    return role in SCORING_ROLES


class KeyConfigError(ValueError):
    """The configured keys cannot be read (the message never contains a key)."""


@dataclass(frozen=True)
class Principal:
    """The holder of a valid key: ``name`` goes into the audit trail."""

    name: str
    role: Role


@dataclass(frozen=True)
class _Entry:
    digest: bytes
    principal: Principal


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def default_name(role: Role, key: str) -> str:
    """``<role>-<first 8 hex of sha256(key)>``: stable, and says nothing usable about the key."""
    return f"{role.name}-{digest(key).hex()[:8]}"


def new_key() -> str:
    """A fresh random key (256 bits, URL-safe: fits a header, a query string and a .env)."""
    return secrets.token_urlsafe(32)


def parse_entry(text: str, where: str) -> tuple[Role, str, str]:
    """``role:key`` or ``role:name:key`` → (role, name, key); ``where`` locates errors."""
    parts = text.strip().split(":", 2)
    if len(parts) < 2:
        raise KeyConfigError(f"{where}: expected role:key or role:name:key")
    role_text = parts[0].strip().lower()
    try:
        role = Role[role_text]
    except KeyError:
        raise KeyConfigError(
            f"{where}: unknown role {role_text[:20]!r} (scorer, viewer, analyst or admin)"
        ) from None
    key = parts[-1].strip()
    if len(key) < 16:
        raise KeyConfigError(f"{where}: the key must be at least 16 characters")
    name = parts[1].strip() if len(parts) == 3 else default_name(role, key)
    if not name or len(name) > KEY_NAME_MAX:
        raise KeyConfigError(f"{where}: the name must be 1 to {KEY_NAME_MAX} characters")
    return role, name, key


def parse_text(text: str, *, lines: bool, source: str) -> list[tuple[Role, str, str]]:
    """Entries of a comma-separated value (``lines=False``) or a file (one per line, ``#``)."""
    chunks = text.splitlines() if lines else text.split(",")
    entries = []
    for number, raw in enumerate(chunks, start=1):
        chunk = raw.split("#", 1)[0] if lines else raw
        if chunk.strip():
            entries.append(parse_entry(chunk, f"{source}, entry {number}"))
    return entries


def configured_entries(settings: Settings) -> list[tuple[Role, str, str]]:
    """Every key of ``api_keys`` and ``api_keys_file``."""
    entries: list[tuple[Role, str, str]] = []
    if settings.api.api_keys is not None:
        entries += parse_text(
            settings.api.api_keys.get_secret_value(), lines=False, source="FRAUDSTREAM_API_KEYS"
        )
    if settings.api.api_keys_file is not None:
        try:
            text = settings.api.api_keys_file.read_text()
        except OSError as error:
            raise KeyConfigError(
                f"cannot read the API keys file {settings.api.api_keys_file}: {error.strerror}"
            ) from None
        entries += parse_text(text, lines=True, source=str(settings.api.api_keys_file))
    return entries


class KeyRing:
    """The digests of the configured keys and the principal each one stands for."""

    def __init__(self, entries: list[tuple[Role, str, str]]) -> None:
        self._entries = [_Entry(digest(key), Principal(name, role)) for role, name, key in entries]

    def __len__(self) -> int:
        return len(self._entries)

    def count(self, role: Role) -> int:
        return sum(1 for entry in self._entries if entry.principal.role == role)

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        return cls(configured_entries(settings))

    def holds(self, principal: Principal) -> bool:
        """Whether a key of ``principal`` (its name and role) is still configured."""
        return any(entry.principal == principal for entry in self._entries)

    def token_secret(self) -> bytes:
        """The HMAC key of stream tokens: the same on every replica with the same keys,
        changed by any key change, and not computable without every key's digest."""
        digests = b"".join(sorted(entry.digest for entry in self._entries))
        return hashlib.sha256(b"fraudstream stream token\x00" + digests).digest()

    def authenticate(self, key: str | None) -> Principal | None:
        """The principal of ``key``, or None; every digest is compared (constant time)."""
        if not key:
            return None
        presented = digest(key)
        found: Principal | None = None
        for entry in self._entries:
            if hmac.compare_digest(presented, entry.digest):
                found = entry.principal
        return found


UNAUTHORIZED = {"WWW-Authenticate": "APIKey"}


def keyring_of(request: Request) -> KeyRing:
    ring: KeyRing = request.app.state.keyring
    return ring


def identify(keyring: KeyRing, key: str | None) -> Principal:
    """The principal of a presented key, or a 401 saying what is wrong with it."""
    if not key:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"missing API key: send it in the {API_KEY_HEADER} header",
            headers=UNAUTHORIZED,
        )
    principal = keyring.authenticate(key)
    if principal is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key", headers=UNAUTHORIZED)
    return principal


# --- stream tokens -------------------------------------------------------------------
# A browser's EventSource cannot send headers, and a key must never be put in a URL: the
# page trades its key (in the header) for a token that opens one stream within a minute.

STREAM_TOKEN_SECONDS = 60
STREAM_TOKEN_MAX = 512
STREAM_TOKEN_HINT = "mint a new one with GET /api/events/token"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class StreamTokens:
    """Mints and checks stream tokens: ``<payload>.<HMAC-SHA256>``, both base64url.

    The payload names the holder, their role and when the token stops opening streams
    (``ttl`` seconds after minting). A stream already open stays open.
    """

    def __init__(
        self,
        keyring: KeyRing,
        *,
        ttl: float = STREAM_TOKEN_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keyring = keyring
        self.ttl = ttl
        self.clock = clock
        self._secret = keyring.token_secret()

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()

    def mint(self, principal: Principal) -> tuple[str, float]:
        """A token for ``principal`` and when it expires (Unix time)."""
        expires = int(self.clock() + self.ttl)
        claims = {"sub": principal.name, "role": principal.role.name, "exp": expires}
        payload = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
        return f"{_b64(payload)}.{_b64(self._sign(payload))}", float(expires)

    def verify(self, token: str | None) -> Principal:
        """The principal a token was minted for, or a 401 saying what is wrong with it."""
        if not token:
            raise _refused(f"missing stream token: {STREAM_TOKEN_HINT}")
        try:
            if len(token) > STREAM_TOKEN_MAX:
                raise ValueError("too long")
            payload_text, signature_text = token.split(".")
            payload, signature = _unb64(payload_text), _unb64(signature_text)
        except (ValueError, binascii.Error):
            raise _refused(f"invalid stream token: {STREAM_TOKEN_HINT}") from None
        if not hmac.compare_digest(signature, self._sign(payload)):
            raise _refused(f"invalid stream token: {STREAM_TOKEN_HINT}")
        claims = json.loads(payload)
        principal = Principal(str(claims["sub"]), Role[claims["role"]])
        if self.clock() >= claims["exp"]:
            raise _refused(f"expired stream token: {STREAM_TOKEN_HINT}")
        if not self.keyring.holds(principal):
            raise _refused("the key this stream token was minted with is no longer configured")
        return principal


def _refused(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers=UNAUTHORIZED)
