"""Cryptography for identity: Ed25519 device signatures and signing keys (``cryptography``),
sealing private keys at rest (Fernet), and tokens in ``prosum_auth``'s format."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

import prosum_auth
from prosum_auth import KeySet, TokenSigner
from prosum_identity.domain.model import Limits


class CryptographyEd25519:
    def generate(self) -> tuple[bytes, bytes]:
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return private, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


class KeyVaultError(Exception):
    """A sealed key cannot be opened: the encryption keys do not include the one it was
    sealed with, or the stored value is damaged."""


class KeySealer:
    """Fernet (AES-128-CBC + HMAC-SHA256). The first key seals; every key given unseals, so
    the encryption key can be rotated by putting the new one first."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one key encryption key is needed")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def __repr__(self) -> str:
        return "KeySealer(...)"

    def seal(self, secret: bytes) -> str:
        return self._fernet.encrypt(secret).decode("ascii")

    def unseal(self, sealed: str) -> bytes:
        try:
            return self._fernet.decrypt(sealed.encode("ascii"))
        except InvalidToken:
            raise KeyVaultError(
                "a signing key cannot be unsealed with PROSUM_IDENTITY_KEY_ENCRYPTION_KEYS"
            ) from None


@dataclass(frozen=True)
class AuthMinter:
    """``TokenMinter`` over ``prosum_auth.TokenSigner``, at the issue time identity chose."""

    kid: str
    private_key: Ed25519PrivateKey

    def __repr__(self) -> str:
        return f"AuthMinter(kid={self.kid!r})"

    def _signer(self, issued_at: int) -> TokenSigner:
        return TokenSigner(self.kid, self.private_key, clock=lambda: float(issued_at))

    def access_token(
        self,
        subject: str,
        scopes: Iterable[str],
        issued_at: int,
        ttl_s: int,
        participant_id: str | None = None,
    ) -> str:
        return self._signer(issued_at).access_token(subject, scopes, ttl_s, participant_id)

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
    ) -> str:
        return self._signer(issued_at).threshold(
            threshold_id,
            participant_id,
            device_id,
            metering_point,
            actions,
            prosum_auth.Limits(limits.max_order_wh, limits.max_open_wh, limits.max_ecoin),
            ttl_s,
        )


def minter_for(kid: str, private_key: bytes) -> AuthMinter:
    return AuthMinter(kid, Ed25519PrivateKey.from_private_bytes(private_key))


class PublishedKeys:
    """The ``KeySet`` of identity's published keys for its own verifier, rebuilt only when
    the published keys change."""

    def __init__(self, jwks: Callable[[], list[dict[str, str]]]) -> None:
        self._jwks = jwks
        self._cached: tuple[tuple[tuple[str, str], ...], KeySet] | None = None

    def __call__(self) -> KeySet:
        jwks = self._jwks()
        fingerprint = tuple((k["kid"], k["x"]) for k in jwks)
        cached = self._cached
        if cached is None or cached[0] != fingerprint:
            cached = (fingerprint, KeySet.from_jwks(jwks))
            self._cached = cached
        return cached[1]
