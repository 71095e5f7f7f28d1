"""Kafka handlers: identity, order book and ledger events into metering.

Each handler runs inside the consumer's transaction, which also records the event as
processed: a redelivered event changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prosum_auth.trust import apply_identity_event, trust_handlers
from prosum_contracts import Envelope
from prosum_metering.adapters.store import SqlMeteringStore
from prosum_metering.application import projections
from prosum_metering.application.ports import MeteringStore
from prosum_platform.eventstore import Transaction
from prosum_platform.messaging import EventHandler


def _on_store(fn: Callable[[MeteringStore, dict[str, Any]], None]) -> EventHandler:
    def handle(envelope: Envelope, tx: Transaction) -> None:
        fn(SqlMeteringStore(tx), envelope.data)

    return handle


def _also_trust(fn: Callable[[MeteringStore, Envelope], None]) -> EventHandler:
    """Keep the trust projection (keys, revocations, status) and then metering's own view."""

    def handle(envelope: Envelope, tx: Transaction) -> None:
        apply_identity_event(envelope, tx)
        fn(SqlMeteringStore(tx), envelope)

    return handle


def _activated(store: MeteringStore, envelope: Envelope) -> None:
    projections.release_deferred_mints(store, envelope.data["participant_id"], envelope.event_id)


def _outcome(confirmed: bool) -> EventHandler:
    def handle(envelope: Envelope, tx: Transaction) -> None:
        projections.ledger_outcome(SqlMeteringStore(tx), confirmed, envelope.data)

    return handle


def metering_handlers() -> Mapping[str, EventHandler]:
    handlers: dict[str, EventHandler] = dict(trust_handlers())
    handlers.update(
        {
            "identity.participant_registered": _also_trust(
                lambda store, e: projections.participant_registered(store, e.data)
            ),
            "identity.participant_activated": _also_trust(_activated),
            "identity.participant_reinstated": _also_trust(_activated),
            "identity.device_registered": _on_store(projections.device_registered),
            "identity.device_revoked": _also_trust(
                lambda store, e: projections.device_revoked(store, e.data)
            ),
            "orderbook.trade_executed": _on_store(projections.trade_executed),
            "ledger.command_confirmed": _outcome(True),
            "ledger.command_failed": _outcome(False),
        }
    )
    return handlers
