"""Identity's application services over the fake store, with a clock tests move, real
Ed25519 and real tokens; and a verifier that learns identity's keys and revocations only from
the integration events identity published, as metering or the orderbook would."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from prosum_auth import KeySet, TokenVerifier
from prosum_identity.adapters.crypto import CryptographyEd25519, minter_for
from prosum_identity.application.clients import BootstrapClient, Clients
from prosum_identity.application.devices import DeviceRegistration, Devices
from prosum_identity.application.keys import SigningKeys
from prosum_identity.application.participants import Participants, record_ledger_outcome
from prosum_identity.application.policy import IdentityPolicy
from prosum_identity.application.ports import UnitOfWork
from prosum_identity.application.thresholds import (
    IssuedChallenge,
    IssuedThreshold,
    ThresholdRequest,
    Thresholds,
)
from prosum_identity.domain.dact import b64url
from prosum_identity.domain.participant import Outcome, Participant
from tests.unit.identity.fakes import FakeClock, FakeStore

OPS_SECRET = "an-ops-secret-that-is-long-enough-1234"


Published = Callable[[], list[tuple[str, str, dict[str, Any]]]]


class PublishedTrust:
    """The trust projection of another service, fed by what identity published."""

    def __init__(self, published: Published) -> None:
        self._published = published

    def _events(self, event_type: str) -> list[dict[str, Any]]:
        return [data for kind, _s, data in self._published() if kind == event_type]

    def keys(self) -> KeySet:
        changes = self._events("identity.signing_keys_changed")
        return KeySet.from_jwks(changes[-1]["keys"] if changes else [])

    def revoked(self, threshold_id: str, device_id: str, participant_id: str) -> str | None:
        if any(
            d["threshold_id"] == threshold_id for d in self._events("identity.threshold_revoked")
        ):
            return "threshold_revoked"
        if any(d["device_id"] == device_id for d in self._events("identity.device_revoked")):
            return "device_revoked"
        status = None
        for kind, _subject, data in self._published():
            if (
                kind.startswith("identity.participant_")
                and data.get("participant_id") == participant_id
            ):
                status = kind.removeprefix("identity.participant_")
        return None if status in ("activated", "reinstated") else "participant_not_active"


@dataclass
class DeviceKey:
    device_id: str
    participant_id: str
    private_key: Ed25519PrivateKey
    dact: dict[str, Any]

    @property
    def public_key(self) -> str:
        return b64url(self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def sign(self, message: str | bytes) -> str:
        raw = message.encode() if isinstance(message, str) else message
        return b64url(self.private_key.sign(raw))


class Harness:
    """Over the fake store by default; integration tests pass the SQL unit of work and a
    reader of its outbox."""

    def __init__(
        self,
        policy: IdentityPolicy | None = None,
        *,
        uow: UnitOfWork | None = None,
        published: Published | None = None,
    ) -> None:
        self.store = FakeStore()
        self.clock = FakeClock()
        self.policy = policy or IdentityPolicy(
            threshold_ttl_s=300, access_token_ttl_s=600, challenge_ttl_s=60
        )
        ed25519 = CryptographyEd25519()
        uow = uow or self.store.unit
        self.uow = uow
        self.published = published or (lambda: list(self.store.published))
        self.keys = SigningKeys(uow, self.clock, ed25519, minter_for, self.policy, refresh_s=0)
        self.participants = Participants(uow, self.clock, self.policy)
        self.devices = Devices(uow, self.clock)
        self.thresholds = Thresholds(uow, self.clock, ed25519, self.keys, self.policy)
        self.clients = Clients(
            uow, self.clock, self.keys, self.policy, BootstrapClient("ops", OPS_SECRET)
        )
        self.trust = PublishedTrust(self.published)
        self.verifier = TokenVerifier(self.trust.keys, self.trust, clock=self.clock.timestamp)
        self.keys.ensure()

    # -- onboarding --------------------------------------------------------------------------
    def confirm(self, participant_id: str, confirmed: bool = True) -> Outcome | None:
        """The ledger adapter's answer to the command the participant waits for."""
        with self.uow() as store:
            participant = store.get(Participant, participant_id)
            assert participant is not None and participant.pending is not None
            command = participant.pending
            return record_ledger_outcome(
                store,
                "ledger.command_confirmed" if confirmed else "ledger.command_failed",
                {
                    "command_id": command.command_id,
                    "command_type": f"ledger.{command.kind}_permissions",
                    "participant_id": participant_id,
                    "reason": "chain_unavailable",
                    "chain_message": "node down",
                },
                self.clock,
            )

    def active_participant(self, participant_id: str = "p-1", role: str = "prosumer") -> str:
        self.participants.register(
            "Alice", role, f"MP-{participant_id}", None, "ops", participant_id
        )
        self.confirm(participant_id)
        return participant_id

    def device(
        self,
        participant_id: str = "p-1",
        device_id: str = "meter-1",
        actions: tuple[str, ...] = ("ask", "bid", "read_data", "submit_readings"),
        register_dact: bool = True,
    ) -> DeviceKey:
        key = DeviceKey(device_id, participant_id, Ed25519PrivateKey.generate(), {})
        key.dact = {
            "dact": 1,
            "device_id": device_id,
            "participant_id": participant_id,
            "kind": "smart_meter",
            "metering_point": f"MP-{participant_id}",
            "actions": sorted(actions),
            "public_key": key.public_key,
        }
        self.devices.register(
            participant_id,
            DeviceRegistration(
                device_id=device_id,
                kind="smart_meter",
                public_key=key.public_key,
                metering_point=f"MP-{participant_id}",
                rating_w=7_000,
                dact=key.dact if register_dact else None,
            ),
            "ops",
        )
        return key

    # -- the certification node ----------------------------------------------------------------
    def request(
        self, key: DeviceKey, challenge: IssuedChallenge, **changes: Any
    ) -> ThresholdRequest:
        fields: dict[str, Any] = {
            "device_id": key.device_id,
            "challenge_id": challenge.challenge_id,
            "signature": key.sign(challenge.message),
            "dact": key.dact,
            "actions": None,
        }
        fields.update(changes)
        return ThresholdRequest(**fields)

    def threshold(self, key: DeviceKey, **changes: Any) -> IssuedThreshold:
        challenge = self.thresholds.challenge(key.device_id)
        return self.thresholds.issue(self.request(key, challenge, **changes))
