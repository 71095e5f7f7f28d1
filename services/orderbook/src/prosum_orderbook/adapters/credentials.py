"""Threshold checks at order rates.

A device sends many orders under one threshold. Verifying its Ed25519 signature and parsing
its claims costs about 0.7 ms, more than the rest of placing an order, and gives the same answer
for the same token every time. ``ThresholdChecks`` therefore verifies a token once with
``prosum_auth.TokenVerifier`` and keeps the verified claims (keyed by the token itself); every
later use re-checks only what can change: that its signing key is still trusted, expiry,
revocation and participant status (read from the trust projection on every use, so a
revocation holds from the moment it is applied), the action and the per-order limits.

``TrustTables`` answers the revocation and status question with prepared queries on the same
tables as ``prosum_auth.trust.SqlTrustStore``, on a read-only connection: ``SqlTrustStore``
builds its statements per call and, on SQLite, its ``engine.connect()`` takes the write lock
(the platform's engine begins every non-read-only transaction with ``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection

import jwt
import orjson
import sqlalchemy as sa

from prosum_auth import AuthError, KeySet, Threshold, TokenVerifier
from prosum_auth.trust import participant_status, revocations, trusted_keys
from prosum_platform.eventstore import EventStore

_REVOKED = (
    sa.select(revocations.c.kind)
    .where(
        sa.or_(
            sa.and_(
                revocations.c.kind == "threshold",
                revocations.c.credential_id == sa.bindparam("threshold_id"),
            ),
            sa.and_(
                revocations.c.kind == "device",
                revocations.c.credential_id == sa.bindparam("device_id"),
            ),
        )
    )
    .order_by(revocations.c.kind.desc())  # a revoked threshold is named first
    .limit(1)
)
_STATUS = sa.select(participant_status.c.status).where(
    participant_status.c.participant_id == sa.bindparam("participant_id")
)


# Built once, with expanding IN lists: compiled once and cached, however many credentials a
# group brings (the queries run inside order entry's write transaction).
_REVOKED_ANY = sa.select(revocations.c.kind, revocations.c.credential_id).where(
    sa.or_(
        sa.and_(
            revocations.c.kind == "threshold",
            revocations.c.credential_id.in_(sa.bindparam("thresholds", expanding=True)),
        ),
        sa.and_(
            revocations.c.kind == "device",
            revocations.c.credential_id.in_(sa.bindparam("devices", expanding=True)),
        ),
    )
)
_STATUSES = sa.select(participant_status.c.participant_id, participant_status.c.status).where(
    participant_status.c.participant_id.in_(sa.bindparam("participants", expanding=True))
)


def credential_refusal(
    conn: sa.Connection, threshold_id: str, device_id: str, participant_id: str
) -> str | None:
    """What ``TrustView.revoked`` answers, on a given connection."""
    kind = conn.execute(_REVOKED, {"threshold_id": threshold_id, "device_id": device_id}).scalar()
    if kind is not None:
        return "threshold_revoked" if kind == "threshold" else "device_revoked"
    status = conn.execute(_STATUS, {"participant_id": participant_id}).scalar()
    return None if status == "active" else "participant_not_active"


def credential_refusals(
    conn: sa.Connection, credentials: Collection[tuple[str, str, str]]
) -> dict[tuple[str, str, str], str | None]:
    """``credential_refusal`` for many (threshold, device, participant) at once: two queries
    whatever their number. A revoked threshold is named before a revoked device."""
    wanted = list(credentials)
    if not wanted:
        return {}
    thresholds = sorted({t for t, _, _ in wanted})
    devices = sorted({d for _, d, _ in wanted})
    revoked: set[tuple[str, str]] = {
        (kind, credential_id)
        for kind, credential_id in conn.execute(
            _REVOKED_ANY, {"thresholds": thresholds, "devices": devices}
        )
    }
    # .all(): a result has keys() and would pass for a mapping with dict() itself.
    statuses: dict[str, str] = dict(
        conn.execute(_STATUSES, {"participants": sorted({p for _, _, p in wanted})}).all()
    )
    out: dict[tuple[str, str, str], str | None] = {}
    for threshold_id, device_id, participant_id in wanted:
        if ("threshold", threshold_id) in revoked:
            refusal: str | None = "threshold_revoked"
        elif ("device", device_id) in revoked:
            refusal = "device_revoked"
        elif statuses.get(participant_id) != "active":
            refusal = "participant_not_active"
        else:
            refusal = None
        out[(threshold_id, device_id, participant_id)] = refusal
    return out


class TrustTables:
    """``prosum_auth.TrustView`` and the trusted keys on the trust projection's tables, with
    prepared statements, on read-only connections (on SQLite a plain ``engine.connect()``
    starts with ``BEGIN IMMEDIATE`` here and so queues behind every writer). Keys change rarely
    and are kept for ``key_cache_s``; ``invalidate`` drops them when a change is applied."""

    def __init__(self, store: EventStore, *, key_cache_s: float = 2.0) -> None:
        self._store = store
        self._key_cache_s = key_cache_s
        self._keys: tuple[float, KeySet] | None = None
        self._lock = threading.Lock()

    def keys(self) -> KeySet:
        with self._lock:
            cached = self._keys
        if cached is not None and time.monotonic() - cached[0] < self._key_cache_s:
            return cached[1]
        with self._store.reading() as conn:
            jwks = conn.execute(sa.select(trusted_keys.c.jwks)).scalar()
        keyset = KeySet.from_jwks(orjson.loads(jwks)) if jwks else KeySet({})
        with self._lock:
            self._keys = (time.monotonic(), keyset)
        return keyset

    def invalidate(self) -> None:
        with self._lock:
            self._keys = None

    def revoked(self, threshold_id: str, device_id: str, participant_id: str) -> str | None:
        with self._store.reading() as conn:
            return credential_refusal(conn, threshold_id, device_id, participant_id)


class ThresholdChecks:
    def __init__(
        self,
        verifier: TokenVerifier,
        trust: TrustTables,
        keys: Callable[[], KeySet],
        *,
        clock: Callable[[], float] = time.time,
        leeway_s: int = 5,
        capacity: int = 20_000,
    ) -> None:
        self._verifier = verifier
        self._trust = trust
        self._keys = keys
        self._clock = clock
        self._leeway = leeway_s
        self._capacity = capacity
        self._verified: OrderedDict[str, tuple[Threshold, str]] = OrderedDict()
        self._lock = threading.Lock()

    def verified(self, token: str | None) -> bool:
        """Whether ``token`` was verified before (so ``check`` needs no I/O but the trust
        check, which ``with_trust=False`` leaves to the caller)."""
        with self._lock:
            return token is not None and token in self._verified

    def check(
        self,
        token: str | None,
        action: str,
        *,
        order_wh: int | None = None,
        ecoin: int | None = None,
        with_trust: bool = True,
    ) -> Threshold:
        """Like ``TokenVerifier.threshold``; raises ``AuthError``. With ``with_trust=False`` a
        token verified before is not checked against revocations and participant status: the
        caller does that (order entry does, in the transaction that accepts the order)."""
        if not token:
            return self._verifier.threshold(token, action, order_wh=order_wh, ecoin=ecoin)
        with self._lock:
            cached = self._verified.get(token)
        if cached is None:
            threshold = self._verifier.threshold(token, action, order_wh=order_wh, ecoin=ecoin)
            kid = str(jwt.get_unverified_header(token).get("kid"))
            with self._lock:
                self._verified[token] = (threshold, kid)
                while len(self._verified) > self._capacity:
                    self._verified.popitem(last=False)
            return threshold
        known, kid = cached
        if kid not in self._keys().kids():  # identity withdrew the signing key
            with self._lock:
                self._verified.pop(token, None)
            return self._verifier.threshold(token, action, order_wh=order_wh, ecoin=ecoin)
        if known.expires_at + self._leeway < self._clock():
            with self._lock:
                self._verified.pop(token, None)
            raise AuthError(401, "credential_expired", "the token has expired")
        if with_trust:
            refused = self._trust.revoked(known.threshold_id, known.device_id, known.participant_id)
            if refused is not None:
                raise AuthError(403, refused, "this credential is no longer honoured")
        if action not in known.actions:
            raise AuthError(403, "action_not_allowed", f"the threshold does not allow {action!r}")
        if order_wh is not None and order_wh > known.limits.max_order_wh:
            raise AuthError(
                403,
                "limit_exceeded",
                f"{order_wh} Wh exceeds the largest order of {known.limits.max_order_wh} Wh",
            )
        if ecoin is not None and ecoin > known.limits.max_ecoin:
            raise AuthError(
                403,
                "limit_exceeded",
                f"{ecoin} ecoin exceeds the threshold's {known.limits.max_ecoin} ecoin",
            )
        return known
