"""What identity's application code needs from the outside, as Protocols. The adapters are
SQLAlchemy (store, key vault), ``cryptography`` (Ed25519, sealing) and ``prosum_auth`` (token
formats); the unit tests use fakes that pass the same contract tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol, TypeVar

from prosum_identity.domain.base import IdentityAggregate
from prosum_identity.domain.model import Limits

A = TypeVar("A", bound=IdentityAggregate)


class IdentityStore(Protocol):
    """Identity's aggregates, outbox and key vault within one transaction: everything done
    through one instance commits together or not at all."""

    def get(self, cls: type[A], key: str) -> A | None:
        """The aggregate rebuilt from its stream, or None when it has no events."""
        ...

    def save(self, aggregate: IdentityAggregate) -> None:
        """Append its pending events (a concurrent writer makes this raise
        ``ConcurrencyConflict``) and bring the read models up to date."""
        ...

    def publish(self, event_type: str, subject: str, data: dict[str, Any]) -> None:
        """Put an integration event (validated against its schema) in the outbox."""
        ...

    def put_private_key(self, kid: str, private_key: bytes) -> None:
        """Seal and keep a signing key's private half."""
        ...

    def private_key(self, kid: str) -> bytes | None: ...

    def discard_private_key(self, kid: str) -> None: ...


UnitOfWork = Callable[[], AbstractContextManager[IdentityStore]]
Clock = Callable[[], datetime]


class Ed25519(Protocol):
    def generate(self) -> tuple[bytes, bytes]:
        """A new key pair: (raw private key, raw public key), 32 bytes each."""
        ...

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool: ...


class TokenMinter(Protocol):
    """Signs access tokens and thresholds in the format of ``prosum_auth`` with one key.
    ``issued_at`` (epoch seconds) is given, so what identity records is what the token says."""

    @property
    def kid(self) -> str: ...

    def access_token(
        self,
        subject: str,
        scopes: Iterable[str],
        issued_at: int,
        ttl_s: int,
        participant_id: str | None = None,
    ) -> str: ...

    def threshold(
        self,
        threshold_id: str,
        participant_id: str,
        device_id: str,
        metering_point: str,
        actions: Iterable[str],
        limits: Limits,
        issued_at: int,
        ttl_s: int,
    ) -> str: ...


MinterFactory = Callable[[str, bytes], TokenMinter]
