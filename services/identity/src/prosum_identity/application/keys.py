"""Identity's signing keys: the first one at first start, rotation, the upkeep that activates and
removes keys on time, and the signer every token is made with.

Every replica signs with the key the ring says is active at the moment, and re-reads the ring
at least every ``refresh_s`` seconds, so a rotation made on one replica reaches the others
quickly; tokens are verified against every published key, so the short overlap is harmless.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from prosum_identity.application.events import jwk
from prosum_identity.application.policy import IdentityPolicy
from prosum_identity.application.ports import (
    Clock,
    Ed25519,
    IdentityStore,
    MinterFactory,
    TokenMinter,
    UnitOfWork,
)
from prosum_identity.application.transactions import commit, retrying
from prosum_identity.domain.dact import b64url
from prosum_identity.domain.keyring import KEY_RING_STREAM, SigningKeyRing


class SigningKeyUnavailable(Exception):
    """No key can sign right now (the ring was never created, or its private key is lost)."""


@dataclass(frozen=True, slots=True)
class KeyView:
    kid: str
    public_key: str
    status: str
    created_at: datetime
    activates_at: datetime
    remove_after: datetime | None


class SigningKeys:
    def __init__(
        self,
        uow: UnitOfWork,
        clock: Clock,
        ed25519: Ed25519,
        minters: MinterFactory,
        policy: IdentityPolicy,
        *,
        refresh_s: float = 1.0,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._ed25519 = ed25519
        self._minters = minters
        self._policy = policy
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._ring: tuple[float, SigningKeyRing | None] | None = None
        self._minter_cache: dict[str, TokenMinter] = {}

    # -- commands ----------------------------------------------------------------------------
    def ensure(self) -> bool:
        """Create the ring with its first key if there is none; True if this call made it."""

        def attempt() -> bool:
            with self._uow() as store:
                if store.get(SigningKeyRing, KEY_RING_STREAM) is not None:
                    return False
                ring = SigningKeyRing()
                self._add_key(store, ring, lead_s=0)
                return True

        created = retrying(attempt)
        self.invalidate()
        return created

    def rotate(self) -> str:
        """Add a new key (signing after the publication lead) and retire the current one."""

        def attempt() -> str:
            with self._uow() as store:
                ring = store.get(SigningKeyRing, KEY_RING_STREAM) or SigningKeyRing()
                return self._add_key(store, ring, lead_s=self._policy.key_publish_lead_s)

        kid = retrying(attempt)
        self.invalidate()
        return kid

    def maintain(self) -> bool:
        """Announce a key whose activation time came, remove keys whose time is up (and their
        private halves). True when the ring changed."""

        def attempt() -> bool:
            with self._uow() as store:
                ring = store.get(SigningKeyRing, KEY_RING_STREAM)
                if ring is None or not ring.maintain(self._clock()):
                    return False
                for key in ring.keys.values():
                    if key.removed:
                        store.discard_private_key(key.kid)
                commit(store, ring)
                return True

        changed = retrying(attempt)
        if changed:
            self.invalidate()
        return changed

    def _add_key(self, store: IdentityStore, ring: SigningKeyRing, lead_s: int) -> str:
        now = self._clock()
        private, public = self._ed25519.generate()
        kid = f"k-{now:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
        ring.add_key(
            kid,
            b64url(public),
            now,
            activates_at=now + timedelta(seconds=max(lead_s, 0)),
            retention=self._policy.key_retention,
        )
        store.put_private_key(kid, private)
        commit(store, ring)
        return kid

    # -- queries -----------------------------------------------------------------------------
    def ring(self) -> SigningKeyRing | None:
        with self._lock:
            cached = self._ring
            if cached is not None and time.monotonic() - cached[0] < self._refresh_s:
                return cached[1]
        with self._uow() as store:
            ring = store.get(SigningKeyRing, KEY_RING_STREAM)
        with self._lock:
            self._ring = (time.monotonic(), ring)
        return ring

    def invalidate(self) -> None:
        with self._lock:
            self._ring = None

    def minter(self) -> TokenMinter:
        """The signer of the key active now. Call it outside any open unit of work."""
        ring = self.ring()
        if ring is None:
            self.ensure()
            ring = self.ring()
        if ring is None:  # pragma: no cover - ensure() has just created it
            raise SigningKeyUnavailable("there is no signing key ring")
        active = ring.active_at(self._clock())
        if active is None:
            raise SigningKeyUnavailable("no signing key is active")
        with self._lock:
            minter = self._minter_cache.get(active.kid)
        if minter is not None:
            return minter
        with self._uow() as store:
            private = store.private_key(active.kid)
        if private is None:
            raise SigningKeyUnavailable(f"the private key of {active.kid} is not in the vault")
        minter = self._minters(active.kid, private)
        with self._lock:
            self._minter_cache = {
                kid: m for kid, m in self._minter_cache.items() if kid in ring.keys
            } | {active.kid: minter}
        return minter

    def jwks(self) -> list[dict[str, str]]:
        ring = self.ring()
        return [jwk(k.kid, k.public_key) for k in ring.published()] if ring is not None else []

    def listing(self) -> list[KeyView]:
        ring = self.ring()
        if ring is None:
            return []
        now = self._clock()
        active = ring.active_at(now)
        return [
            KeyView(
                kid=k.kid,
                public_key=k.public_key,
                status=k.status(now, active.kid if active else None),
                created_at=k.created_at,
                activates_at=k.activates_at,
                remove_after=k.remove_after,
            )
            for k in sorted(ring.keys.values(), key=lambda k: k.sequence)
        ]
