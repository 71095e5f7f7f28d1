"""Identity's keys and participant status as another service learns them: through the trust
projection's own handler, fed the events identity publishes."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from prosum_auth import TokenSigner, jwk_of
from prosum_auth.trust import apply_identity_event
from prosum_contracts import Envelope
from prosum_platform.eventstore import EventStore


class IdentityStandIn:
    """Signs tokens like identity and tells a service's store what identity's events say."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.signer = TokenSigner("test-key-1", self.key)

    def events_for_keys(self) -> list[Envelope]:
        return [
            Envelope(
                "identity.signing_keys_changed",
                1,
                "identity",
                "signing-keys",
                {"keys": [jwk_of("test-key-1", self.key.public_key())], "active_kid": "test-key-1"},
            )
        ]

    def status_event(self, participant_id: str, status: str) -> Envelope:
        return Envelope(
            f"identity.participant_{status}",
            1,
            "identity",
            participant_id,
            {"participant_id": participant_id},
        )

    def apply(self, store: EventStore, events: list[Envelope]) -> None:
        with store.transaction() as tx:
            for event in events:
                apply_identity_event(event, tx)

    def ops(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.signer.access_token('ops-console', ['ops'], 600)}"}

    def participant(self, participant_id: str) -> dict[str, str]:
        token = self.signer.access_token(
            f"app-{participant_id}", ["participant"], 600, participant_id
        )
        return {"Authorization": f"Bearer {token}"}
