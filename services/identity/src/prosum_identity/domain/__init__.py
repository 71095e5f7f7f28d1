"""Identity's domain: participants, devices (IDoT) with their DACTs and challenges, thresholds,
OAuth clients and the signing key ring. Standard library only."""

from prosum_identity.domain.clients import CLIENT_EVENTS
from prosum_identity.domain.device import DEVICE_EVENTS
from prosum_identity.domain.keyring import KEYRING_EVENTS
from prosum_identity.domain.participant import METERING_POINT_EVENTS, PARTICIPANT_EVENTS
from prosum_identity.domain.threshold import THRESHOLD_EVENTS
from prosum_platform.domain import DomainEvent

ALL_EVENTS: tuple[type[DomainEvent], ...] = (
    *PARTICIPANT_EVENTS,
    *METERING_POINT_EVENTS,
    *DEVICE_EVENTS,
    *THRESHOLD_EVENTS,
    *CLIENT_EVENTS,
    *KEYRING_EVENTS,
)

__all__ = ["ALL_EVENTS"]
