"""Onboarding (Oh et al.: the admin node connects producer and consumer nodes and grants them
chain permissions) and the participant's life cycle after it; and what identity does with the
ledger adapter's answers."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prosum_identity.application.policy import IdentityPolicy
from prosum_identity.application.ports import Clock, IdentityStore, UnitOfWork
from prosum_identity.application.transactions import commit, retrying
from prosum_identity.domain.device import Device, DeviceStatus
from prosum_identity.domain.errors import conflict, not_found
from prosum_identity.domain.model import Limits
from prosum_identity.domain.participant import MeteringPointClaim, Outcome, Participant

log = logging.getLogger(__name__)

LEDGER_CONFIRMED = "ledger.command_confirmed"
LEDGER_FAILED = "ledger.command_failed"
_PERMISSION_COMMANDS = frozenset({"ledger.grant_permissions", "ledger.revoke_permissions"})


def new_command_id(kind: str) -> str:
    return f"identity-{kind}-{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class Registered:
    participant_id: str
    created: bool


class Participants:
    def __init__(self, uow: UnitOfWork, clock: Clock, policy: IdentityPolicy) -> None:
        self._uow = uow
        self._clock = clock
        self._policy = policy

    def register(
        self,
        name: str,
        role: str,
        metering_point: str,
        limits: Limits | None,
        by: str,
        participant_id: str | None = None,
    ) -> Registered:
        """Register a participant and ask the ledger for its permissions. Registering the same
        participant again (same id and data) is answered with the first registration."""
        pid = participant_id or f"p-{uuid.uuid4().hex}"

        def attempt() -> Registered:
            with self._uow() as store:
                now = self._clock()
                existing = store.get(Participant, pid)
                if existing is not None:
                    if existing.is_same_registration(name, role, metering_point, limits):
                        return Registered(pid, created=False)
                    raise conflict(
                        "participant_exists", f"participant {pid} exists with other data"
                    )
                participant = Participant.register(pid, name, role, metering_point, limits, now, by)
                claim = store.get(MeteringPointClaim, metering_point) or MeteringPointClaim(
                    MeteringPointClaim.stream(metering_point)
                )
                claim.claim(pid, now)
                participant.request_grant(new_command_id("grant"), now)
                commit(store, claim, participant)
                return Registered(pid, created=True)

        return retrying(attempt)

    def suspend(self, participant_id: str, reason: str, by: str) -> None:
        self._change(
            participant_id,
            lambda p, now: p.suspend(reason, new_command_id("revoke"), now, by),
        )

    def reinstate(self, participant_id: str, reason: str, by: str) -> None:
        self._change(
            participant_id,
            lambda p, now: p.reinstate(reason, new_command_id("grant"), now, by),
        )

    def retry_grant(self, participant_id: str, by: str) -> None:
        log.info("identity: %s retries the chain grant of %s", by, participant_id)
        self._change(participant_id, lambda p, now: p.request_grant(new_command_id("grant"), now))

    def set_limits(self, participant_id: str, limits: Limits | None, by: str) -> None:
        self._change(participant_id, lambda p, now: p.change_limits(limits, now, by))

    def close(self, participant_id: str, reason: str, by: str) -> None:
        """Close for good: chain permissions revoked, every device revoked, the metering
        point free for whoever takes over the connection."""

        def attempt() -> None:
            with self._uow() as store:
                now = self._clock()
                participant = _participant(store, participant_id)
                participant.close(reason, new_command_id("revoke"), now, by)
                changed: list[Participant | Device | MeteringPointClaim] = [participant]
                for device_id in participant.devices:
                    device = store.get(Device, device_id)
                    if device is not None and device.status is DeviceStatus.ACTIVE:
                        device.revoke(f"participant closed: {reason}"[:500], now, by)
                        changed.append(device)
                claim = store.get(MeteringPointClaim, participant.metering_point)
                if claim is not None:
                    claim.release(participant_id, now)
                    changed.append(claim)
                commit(store, *changed)

        retrying(attempt)

    def _change(
        self, participant_id: str, command: Callable[[Participant, datetime], None]
    ) -> None:
        def attempt() -> None:
            with self._uow() as store:
                participant = _participant(store, participant_id)
                command(participant, self._clock())
                commit(store, participant)

        retrying(attempt)


def _participant(store: IdentityStore, participant_id: str) -> Participant:
    participant = store.get(Participant, participant_id)
    if participant is None:
        raise not_found("participant_unknown", f"no participant {participant_id!r}")
    return participant


def record_ledger_outcome(
    store: IdentityStore, event_type: str, data: dict[str, Any], clock: Clock
) -> Outcome | None:
    """Consumer side: a grant or revoke identity asked for was confirmed or failed.

    Runs in the consumer's transaction (the one that records the event as processed), so an
    outcome delivered twice is applied once; an outcome that is not the one the participant
    waits for (an older command, someone else's command) changes nothing.
    """
    if data.get("command_type") not in _PERMISSION_COMMANDS:
        return None
    participant_id = data.get("participant_id")
    if not participant_id:
        return None
    participant = store.get(Participant, participant_id)
    if participant is None:
        return None
    confirmed = event_type == LEDGER_CONFIRMED
    reason = "" if confirmed else f"{data.get('reason', '')}: {data.get('chain_message', '')}"
    outcome = participant.record_ledger_outcome(
        data["command_id"], confirmed, reason[:500], clock()
    )
    if outcome is None:
        return None
    if outcome is Outcome.REVOKE_FAILED:
        log.warning(
            "identity: the chain did not revoke the permissions of %s (%s)", participant_id, reason
        )
    elif outcome is Outcome.GRANT_FAILED:
        log.warning(
            "identity: the chain did not grant %s its permissions (%s)", participant_id, reason
        )
    commit(store, participant)
    return outcome
