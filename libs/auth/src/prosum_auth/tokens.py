"""Access tokens and thresholds: their format, how identity signs them, how anyone verifies them.

Both are JWS compact tokens signed with Ed25519 (``alg: EdDSA``) and carry the signing key's
``kid``. Identity publishes its public keys (JWKS, and the ``identity.signing_keys_changed``
event); every other service verifies offline with them.

- An **access token** (``typ: at+jwt``) lets an ops user, a partner system or a participant's
  app call the APIs: ``sub`` (client id), ``scope`` (space-separated: ``ops``, ``partner``,
  ``participant``), ``participant_id`` for participant clients.
- A **threshold** (``typ: threshold+jwt``) is the Song paper's capability handed to a device
  after it proved possession of its key and its DACT matched: ``sub`` (participant), ``dev``
  (device), ``mp`` (metering point), ``act`` (allowed actions), ``lim`` (largest order in Wh,
  most open volume in Wh, most ecoin value) and a unique ``jti``.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ISSUER = "prosum-identity"
AUDIENCE = "prosum"
ACCESS_TYPE = "at+jwt"
THRESHOLD_TYPE = "threshold+jwt"
SCOPES = frozenset({"ops", "partner", "participant"})
ACTIONS = frozenset({"bid", "ask", "submit_readings", "read_data"})


class AuthError(Exception):
    """A credential was refused. ``status`` is the HTTP status to answer with (401: who are
    you?, 403: you may not), ``reason`` a stable code for clients."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_key_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def jwk_of(kid: str, key: Ed25519PublicKey) -> dict[str, str]:
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url(public_key_bytes(key)),
        "kid": kid,
        "use": "sig",
        "alg": "EdDSA",
    }


class KeySet:
    """Trusted public keys by kid."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey]) -> None:
        self._keys = dict(keys)

    @classmethod
    def from_jwks(cls, jwks: Iterable[Mapping[str, Any]]) -> KeySet:
        keys: dict[str, Ed25519PublicKey] = {}
        for jwk in jwks:
            if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
                continue
            keys[str(jwk["kid"])] = Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
        return cls(keys)

    def get(self, kid: str) -> Ed25519PublicKey | None:
        return self._keys.get(kid)

    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)


@dataclass(frozen=True, slots=True)
class AccessClaims:
    subject: str
    scopes: frozenset[str]
    participant_id: str | None
    token_id: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class Limits:
    max_order_wh: int
    max_open_wh: int
    max_ecoin: int


@dataclass(frozen=True, slots=True)
class Threshold:
    threshold_id: str
    participant_id: str
    device_id: str
    metering_point: str
    actions: frozenset[str]
    limits: Limits
    expires_at: int


class TrustView(Protocol):
    """What a verifier needs to know beyond signatures: revocations and participant status."""

    def revoked(self, threshold_id: str, device_id: str, participant_id: str) -> str | None:
        """None when the credential stands; else a reason code (``threshold_revoked``,
        ``device_revoked``, ``participant_not_active``)."""
        ...


class NothingRevoked:
    def revoked(self, threshold_id: str, device_id: str, participant_id: str) -> str | None:
        return None


@dataclass
class TokenSigner:
    """Identity's side: signs tokens with its active key."""

    kid: str
    private_key: Ed25519PrivateKey
    clock: Callable[[], float] = field(default=time.time)

    def access_token(
        self,
        subject: str,
        scopes: Iterable[str],
        ttl_s: int,
        participant_id: str | None = None,
    ) -> str:
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": subject,
            "scope": " ".join(sorted(scopes)),
            "iat": now,
            "nbf": now,
            "exp": now + ttl_s,
            "jti": str(uuid.uuid4()),
        }
        if participant_id is not None:
            claims["participant_id"] = participant_id
        return self._sign(claims, ACCESS_TYPE)

    def threshold(
        self,
        threshold_id: str,
        participant_id: str,
        device_id: str,
        metering_point: str,
        actions: Iterable[str],
        limits: Limits,
        ttl_s: int,
    ) -> str:
        now = int(self.clock())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": participant_id,
            "jti": threshold_id,
            "dev": device_id,
            "mp": metering_point,
            "act": sorted(actions),
            "lim": {
                "max_order_wh": limits.max_order_wh,
                "max_open_wh": limits.max_open_wh,
                "max_ecoin": limits.max_ecoin,
            },
            "iat": now,
            "nbf": now,
            "exp": now + ttl_s,
        }
        return self._sign(claims, THRESHOLD_TYPE)

    def _sign(self, claims: dict[str, Any], typ: str) -> str:
        return jwt.encode(
            claims, self.private_key, algorithm="EdDSA", headers={"kid": self.kid, "typ": typ}
        )


class TokenVerifier:
    """Offline verification with identity's published keys and the local trust projection."""

    def __init__(
        self,
        keys: Callable[[], KeySet],
        trust: TrustView | None = None,
        *,
        clock: Callable[[], float] = time.time,
        leeway_s: int = 5,
    ) -> None:
        self._keys = keys
        self._trust = trust or NothingRevoked()
        self._clock = clock
        self._leeway = leeway_s

    def _decode(self, token: str | None, typ: str) -> dict[str, Any]:
        if not token:
            raise AuthError(401, "credential_missing", "no token was presented")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError(401, "credential_malformed", str(exc)) from None
        if header.get("alg") != "EdDSA":
            raise AuthError(401, "credential_malformed", f"algorithm {header.get('alg')!r} refused")
        if header.get("typ") != typ:
            raise AuthError(401, "wrong_credential_type", f"expected a {typ} token")
        kid = header.get("kid")
        key = self._keys().get(str(kid)) if kid else None
        if key is None:
            raise AuthError(401, "unknown_signing_key", f"no trusted key with kid {kid!r}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["EdDSA"],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=self._leeway,
                # Time is checked below against the verifier's clock, not PyJWT's.
                options={
                    "require": ["exp", "iat", "sub", "jti"],
                    "verify_iat": False,
                    "verify_exp": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise AuthError(401, "signature_invalid", "the signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise AuthError(401, "credential_invalid", str(exc)) from None
        now = self._clock()
        try:
            expires, not_before = float(claims["exp"]), float(claims.get("nbf", 0))
        except (TypeError, ValueError):
            raise AuthError(401, "credential_invalid", "exp and nbf must be numbers") from None
        if expires + self._leeway < now:
            raise AuthError(401, "credential_expired", "the token has expired")
        if not_before - self._leeway > now:
            raise AuthError(401, "credential_not_yet_valid", "the token is not valid yet")
        return claims

    def access(self, token: str | None, *required_scopes: str) -> AccessClaims:
        """Verify an access token holding at least one of ``required_scopes``."""
        claims = self._decode(token, ACCESS_TYPE)
        scopes = frozenset(str(claims.get("scope", "")).split())
        if required_scopes and not scopes & set(required_scopes):
            raise AuthError(403, "insufficient_scope", f"needs one of {sorted(required_scopes)}")
        return AccessClaims(
            subject=str(claims["sub"]),
            scopes=scopes,
            participant_id=claims.get("participant_id"),
            token_id=str(claims["jti"]),
            expires_at=int(claims["exp"]),
        )

    def threshold(
        self,
        token: str | None,
        action: str,
        *,
        order_wh: int | None = None,
        ecoin: int | None = None,
    ) -> Threshold:
        """Verify a threshold for ``action`` and, when given, one order's size and value.

        Limits that need state (open volume across orders) are the caller's to check with
        ``Threshold.limits``.
        """
        claims = self._decode(token, THRESHOLD_TYPE)
        try:
            limits_raw = claims["lim"]
            threshold = Threshold(
                threshold_id=str(claims["jti"]),
                participant_id=str(claims["sub"]),
                device_id=str(claims["dev"]),
                metering_point=str(claims.get("mp", "")),
                actions=frozenset(str(a) for a in claims["act"]),
                limits=Limits(
                    int(limits_raw["max_order_wh"]),
                    int(limits_raw["max_open_wh"]),
                    int(limits_raw["max_ecoin"]),
                ),
                expires_at=int(claims["exp"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AuthError(401, "credential_invalid", f"threshold claims: {exc}") from None
        refused = self._trust.revoked(
            threshold.threshold_id, threshold.device_id, threshold.participant_id
        )
        if refused is not None:
            raise AuthError(403, refused, "this credential is no longer honoured")
        if action not in threshold.actions:
            raise AuthError(403, "action_not_allowed", f"the threshold does not allow {action!r}")
        if order_wh is not None and order_wh > threshold.limits.max_order_wh:
            raise AuthError(
                403,
                "limit_exceeded",
                f"{order_wh} Wh exceeds the largest order of {threshold.limits.max_order_wh} Wh",
            )
        if ecoin is not None and ecoin > threshold.limits.max_ecoin:
            raise AuthError(
                403,
                "limit_exceeded",
                f"{ecoin} ecoin exceeds the threshold's {threshold.limits.max_ecoin} ecoin",
            )
        return threshold
