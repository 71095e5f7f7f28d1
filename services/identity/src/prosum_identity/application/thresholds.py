"""The certification node (Song 2019, steps 3 and 4): a device asks for a challenge, signs it,
presents its DACT, and gets a threshold when everything holds.

Checks, in this order, each refusing with its own reason and changing nothing:

1. the DACT is well-formed and the signature is 64 bytes of base64url (``dact_malformed``,
   ``signature_malformed``);
2. the device exists and is not revoked (``device_unknown``, ``device_revoked``);
3. the challenge is the device's, open, unused and unexpired (``challenge_unknown``,
   ``challenge_used``, ``challenge_expired``);
4. the signature over the exact message (``domain.dact``) verifies with the device's key
   (``signature_invalid``);
5. the presented DACT is the registered one (``dact_mismatch``);
6. the participant is active (``participant_pending``, ``participant_grant_failed``,
   ``participant_suspended``, ``participant_closed``);
7. the actions (the DACT's that the role permits, or a requested subset of them) are not empty
   (``action_not_permitted``).
"""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prosum_identity.application.devices import device_of
from prosum_identity.application.keys import SigningKeys
from prosum_identity.application.policy import IdentityPolicy
from prosum_identity.application.ports import Clock, Ed25519, IdentityStore, UnitOfWork
from prosum_identity.application.transactions import commit, retrying
from prosum_identity.domain.dact import (
    SIGNATURE_LENGTH,
    Dact,
    b64url_decode,
    public_key_bytes,
    threshold_request_message,
)
from prosum_identity.domain.errors import (
    IdentityError,
    Refusal,
    forbidden,
    invalid,
    not_found,
)
from prosum_identity.domain.model import ALL_ACTIONS, ROLE_ACTIONS, Limits
from prosum_identity.domain.participant import Participant, ParticipantStatus
from prosum_identity.domain.threshold import Threshold

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IssuedChallenge:
    challenge_id: str
    device_id: str
    nonce: str
    issued_at: datetime
    expires_at: datetime
    message: str  # what the device signs, given the DACT registered for it


@dataclass(frozen=True, slots=True)
class ThresholdRequest:
    device_id: str
    challenge_id: str
    signature: str
    dact: object
    actions: tuple[str, ...] | None = None  # ask for fewer actions than the DACT allows


@dataclass(frozen=True, slots=True)
class IssuedThreshold:
    threshold: str  # the signed token
    threshold_id: str
    participant_id: str
    device_id: str
    metering_point: str
    actions: tuple[str, ...]
    limits: Limits
    issued_at: datetime
    expires_at: datetime
    kid: str


def active_participant(store: IdentityStore, participant_id: str) -> Participant:
    participant = store.get(Participant, participant_id)
    if participant is None:  # pragma: no cover - a device always has its participant
        raise not_found("participant_unknown", f"no participant {participant_id!r}")
    if participant.status is not ParticipantStatus.ACTIVE:
        raise forbidden(
            f"participant_{participant.status.value}",
            f"participant {participant_id} is {participant.status.value}: no thresholds",
        )
    return participant


class Thresholds:
    def __init__(
        self,
        uow: UnitOfWork,
        clock: Clock,
        ed25519: Ed25519,
        keys: SigningKeys,
        policy: IdentityPolicy,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._ed25519 = ed25519
        self._keys = keys
        self._policy = policy

    def challenge(self, device_id: str) -> IssuedChallenge:
        def attempt() -> IssuedChallenge:
            with self._uow() as store:
                now = self._clock()
                device = device_of(store, device_id)
                device.require_active()
                active_participant(store, device.participant_id)
                challenge = device.issue_challenge(
                    f"ch-{uuid.uuid4().hex}",
                    secrets.token_urlsafe(32),
                    now,
                    timedelta(seconds=self._policy.challenge_ttl_s),
                    self._policy.challenge_rate,
                )
                commit(store, device)
                assert device.dact_sha256 is not None
                message = threshold_request_message(
                    challenge.challenge_id, challenge.nonce, device_id, device.dact_sha256
                )
                return IssuedChallenge(
                    challenge_id=challenge.challenge_id,
                    device_id=device_id,
                    nonce=challenge.nonce,
                    issued_at=challenge.issued_at,
                    expires_at=challenge.expires_at,
                    message=message.decode(),
                )

        return retrying(attempt)

    def issue(self, request: ThresholdRequest) -> IssuedThreshold:
        dact = Dact.from_document(request.dact)
        signature = b64url_decode(request.signature, SIGNATURE_LENGTH, "signature")
        requested = _requested_actions(request.actions)
        minter = self._keys.minter()  # before the transaction: it may read the key vault

        def attempt() -> IssuedThreshold:
            with self._uow() as store:
                now = self._clock()
                device = device_of(store, request.device_id)
                device.require_active()
                challenge = device.open_challenge(request.challenge_id, now)
                message = threshold_request_message(
                    challenge.challenge_id, challenge.nonce, device.key, dact.digest()
                )
                if not self._ed25519.verify(
                    public_key_bytes(device.public_key), message, signature
                ):
                    raise IdentityError(
                        Refusal.UNAUTHENTICATED,
                        "signature_invalid",
                        "the signature does not verify with the device's key",
                    )
                device.match_dact(dact)
                participant = active_participant(store, device.participant_id)
                permitted = frozenset(dact.actions) & ROLE_ACTIONS[participant.role]
                if requested is not None:
                    if not requested <= permitted:
                        raise forbidden(
                            "action_not_permitted",
                            f"{sorted(requested - permitted)} not permitted to this device",
                        )
                    permitted = requested
                if not permitted:
                    raise forbidden(
                        "action_not_permitted",
                        f"the DACT allows none of the actions a {participant.role.value} may take",
                    )
                limits = participant.limits or self._policy.default_limits
                issued_at = datetime.fromtimestamp(int(now.timestamp()), UTC)
                ttl = self._policy.threshold_ttl_s
                expires_at = issued_at + timedelta(seconds=ttl)
                threshold_id = f"th-{uuid.uuid4().hex}"
                device.answer_challenge(challenge.challenge_id, threshold_id, now)
                threshold = Threshold.issue(
                    threshold_id,
                    participant.key,
                    device.key,
                    device.metering_point,
                    permitted,
                    limits,
                    challenge.challenge_id,
                    minter.kid,
                    now,
                    expires_at,
                )
                token = minter.threshold(
                    threshold_id,
                    participant.key,
                    device.key,
                    device.metering_point,
                    sorted(permitted),
                    limits,
                    int(issued_at.timestamp()),
                    ttl,
                )
                commit(store, device, threshold)
                return IssuedThreshold(
                    threshold=token,
                    threshold_id=threshold_id,
                    participant_id=participant.key,
                    device_id=device.key,
                    metering_point=device.metering_point,
                    actions=tuple(sorted(permitted)),
                    limits=limits,
                    issued_at=issued_at,
                    expires_at=expires_at,
                    kid=minter.kid,
                )

        try:
            return retrying(attempt)
        except IdentityError as refusal:
            # An audit trail of refused attempts (attacks look like these), without changing
            # any state: the log, not the event store.
            log.warning(
                "identity: threshold refused for device %s (challenge %s): %s",
                request.device_id,
                request.challenge_id,
                refusal.reason,
            )
            raise

    def revoke(
        self, threshold_id: str, reason: str, by: str, acting_for: str | None = None
    ) -> None:
        def attempt() -> None:
            with self._uow() as store:
                threshold = store.get(Threshold, threshold_id)
                if threshold is None or (
                    acting_for is not None and threshold.participant_id != acting_for
                ):
                    raise not_found("threshold_unknown", f"no threshold {threshold_id!r}")
                threshold.revoke(reason, self._clock(), by)
                commit(store, threshold)

        retrying(attempt)


def _requested_actions(actions: tuple[str, ...] | None) -> frozenset[str] | None:
    if actions is None:
        return None
    requested = frozenset(actions)
    if unknown := requested - ALL_ACTIONS:
        raise invalid("action_unknown", f"unknown actions {sorted(unknown)}")
    if not requested:
        raise invalid("action_unknown", "ask for at least one action, or leave actions out")
    return requested
