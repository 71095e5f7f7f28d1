"""Devices: registration with their key and metering point, their DACT registered in advance,
and revocation."""

from __future__ import annotations

from dataclasses import dataclass

from prosum_identity.application.ports import Clock, IdentityStore, UnitOfWork
from prosum_identity.application.transactions import commit, retrying
from prosum_identity.domain.dact import Dact
from prosum_identity.domain.device import Device
from prosum_identity.domain.errors import conflict, invalid, not_found
from prosum_identity.domain.participant import Participant


@dataclass(frozen=True, slots=True)
class DeviceRegistration:
    device_id: str
    kind: str
    public_key: str
    metering_point: str
    rating_w: int
    dact: object | None = None  # the DACT document, when registered along with the device


def device_of(store: IdentityStore, device_id: str, acting_for: str | None = None) -> Device:
    """The device, if it exists and (when ``acting_for`` is a participant) is theirs."""
    device = store.get(Device, device_id)
    if device is None or (acting_for is not None and device.participant_id != acting_for):
        raise not_found("device_unknown", f"no device {device_id!r}")
    return device


class Devices:
    def __init__(self, uow: UnitOfWork, clock: Clock) -> None:
        self._uow = uow
        self._clock = clock

    def register(self, participant_id: str, registration: DeviceRegistration, by: str) -> bool:
        """Register a device of a participant (and its DACT when given). True if it is new;
        the same registration again changes nothing."""
        r = registration
        dact = Dact.from_document(r.dact) if r.dact is not None else None

        def attempt() -> bool:
            with self._uow() as store:
                now = self._clock()
                participant = store.get(Participant, participant_id)
                if participant is None:
                    raise not_found("participant_unknown", f"no participant {participant_id!r}")
                if r.metering_point != participant.metering_point:
                    raise invalid(
                        "metering_point_mismatch",
                        "a device measures the metering point its participant trades for "
                        f"({participant.metering_point})",
                    )
                existing = store.get(Device, r.device_id)
                if existing is not None:
                    same = existing.is_same_registration(
                        participant_id, r.kind, r.public_key, r.metering_point, r.rating_w
                    )
                    if not same:
                        raise conflict(
                            "device_exists", f"device {r.device_id} is registered with other data"
                        )
                    if dact is not None and dact.digest() != existing.dact_sha256:
                        raise conflict(
                            "device_exists",
                            f"device {r.device_id} has another DACT; replace it with PUT .../dact",
                        )
                    return False
                device = Device.register(
                    r.device_id,
                    participant_id,
                    r.kind,
                    r.public_key,
                    r.metering_point,
                    r.rating_w,
                    now,
                    by,
                )
                participant.attach_device(r.device_id, now)
                if dact is not None:
                    device.register_dact(dact, now, by)
                commit(store, participant, device)
                return True

        return retrying(attempt)

    def register_dact(self, device_id: str, document: object, by: str) -> bool:
        """Register (or replace) the DACT of a device; True if it changed."""
        dact = Dact.from_document(document)

        def attempt() -> bool:
            with self._uow() as store:
                device = device_of(store, device_id)
                changed = device.register_dact(dact, self._clock(), by)
                commit(store, device)
                return changed

        return retrying(attempt)

    def revoke(self, device_id: str, reason: str, by: str, acting_for: str | None = None) -> None:
        def attempt() -> None:
            with self._uow() as store:
                device = device_of(store, device_id, acting_for)
                device.revoke(reason, self._clock(), by)
                commit(store, device)

        retrying(attempt)
