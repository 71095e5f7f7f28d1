"""OAuth2 clients (ops users' tools, partner systems, participants' apps) and their secrets.

Secrets are never stored: only an scrypt hash (``scrypt$n$r$p$salt$hash``, RFC 7914), checked
in constant time. The first ops client is not one of these: it comes from configuration.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from prosum_identity.domain.base import IdentityAggregate
from prosum_identity.domain.errors import conflict, invalid
from prosum_identity.domain.model import MAX_NAME, check_id, check_reason
from prosum_platform.domain import DomainEvent

SCOPES = frozenset({"ops", "partner", "participant"})

# scrypt cost: 16 MiB and some 50 ms per check on a server core; a client asks for a token
# every few minutes, and the cost is what makes a stolen hash expensive to attack.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_DKLEN = 32
MIN_SECRET_LENGTH = 32


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_secret(secret: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, dklen=_DKLEN)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(
            secret.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def _decoy() -> str:
    return hash_secret(secrets.token_urlsafe(16))


def spend_like_a_check(secret: str) -> None:
    """Spent on an unknown client id, so that a wrong id takes as long as a wrong secret."""
    verify_secret(secret, _decoy())


class ClientStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


@dataclass(frozen=True, kw_only=True)
class ClientRegistered(DomainEvent):
    event_type: ClassVar[str] = "ClientRegistered"
    name: str
    scopes: tuple[str, ...]
    participant_id: str | None
    secret_hash: str
    created_at: datetime
    created_by: str


@dataclass(frozen=True, kw_only=True)
class ClientSecretRotated(DomainEvent):
    event_type: ClassVar[str] = "ClientSecretRotated"
    secret_hash: str
    rotated_at: datetime
    rotated_by: str


@dataclass(frozen=True, kw_only=True)
class ClientDisabled(DomainEvent):
    event_type: ClassVar[str] = "ClientDisabled"
    reason: str
    disabled_at: datetime
    disabled_by: str


CLIENT_EVENTS: tuple[type[DomainEvent], ...] = (
    ClientRegistered,
    ClientSecretRotated,
    ClientDisabled,
)


class ApiClient(IdentityAggregate):
    STREAM_PREFIX: ClassVar[str] = "client:"

    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.name = ""
        self.scopes: frozenset[str] = frozenset()
        self.participant_id: str | None = None
        self.secret_hash = ""
        self.status = ClientStatus.ACTIVE
        self.created_at: datetime | None = None
        self.updated_at: datetime | None = None

    @property
    def client_id(self) -> str:
        return self.id.removeprefix(self.STREAM_PREFIX)

    @classmethod
    def register(
        cls,
        client_id: str,
        name: str,
        scopes: frozenset[str],
        participant_id: str | None,
        secret_hash: str,
        now: datetime,
        by: str,
    ) -> ApiClient:
        check_id(client_id, "client_id")
        if not (name.strip() and len(name) <= MAX_NAME):
            raise invalid("name_invalid", f"name must be 1-{MAX_NAME} characters")
        if not scopes or not scopes <= SCOPES:
            raise invalid("scope_invalid", f"scopes must be a non-empty subset of {sorted(SCOPES)}")
        if ("participant" in scopes) != (participant_id is not None):
            raise invalid(
                "scope_invalid",
                "a client has the participant scope exactly when it is bound to a participant",
            )
        client = cls(cls.stream(client_id))
        client._trigger(
            ClientRegistered(
                name=name,
                scopes=tuple(sorted(scopes)),
                participant_id=participant_id,
                secret_hash=secret_hash,
                created_at=now,
                created_by=by,
            )
        )
        return client

    def rotate_secret(self, secret_hash: str, now: datetime, by: str) -> None:
        self._require_active()
        self._trigger(ClientSecretRotated(secret_hash=secret_hash, rotated_at=now, rotated_by=by))

    def disable(self, reason: str, now: datetime, by: str) -> None:
        check_reason(reason)
        self._require_active()
        self._trigger(ClientDisabled(reason=reason, disabled_at=now, disabled_by=by))

    def _require_active(self) -> None:
        if self.status is ClientStatus.DISABLED:
            raise conflict("client_disabled", f"client {self.client_id} is disabled")

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, ClientRegistered):
            self.name = event.name
            self.scopes = frozenset(event.scopes)
            self.participant_id = event.participant_id
            self.secret_hash = event.secret_hash
            self.created_at = self.updated_at = event.created_at
        elif isinstance(event, ClientSecretRotated):
            self.secret_hash = event.secret_hash
            self.updated_at = event.rotated_at
        elif isinstance(event, ClientDisabled):
            self.status = ClientStatus.DISABLED
            self.updated_at = event.disabled_at
        else:  # pragma: no cover - every event type is handled above
            super().apply(event)
