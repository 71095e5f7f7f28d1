"""Consumer handlers for the ledger adapter's outcome events (``prosum.ledger.events``)."""

from __future__ import annotations

from collections.abc import Callable

from prosum_contracts import Envelope
from prosum_identity.adapters.crypto import KeySealer
from prosum_identity.adapters.store import SqlIdentityStore
from prosum_identity.application.participants import (
    LEDGER_CONFIRMED,
    LEDGER_FAILED,
    record_ledger_outcome,
)
from prosum_identity.application.ports import Clock
from prosum_platform.eventstore import Transaction

Handler = Callable[[Envelope, Transaction], None]


def ledger_handlers(sealer: KeySealer, clock: Clock) -> dict[str, Handler]:
    """Run in the consumer's transaction, which also records the event as processed: a
    redelivered outcome finds that record and is not applied again."""

    def on_outcome(envelope: Envelope, tx: Transaction) -> None:
        record_ledger_outcome(
            SqlIdentityStore(tx, sealer, cause=envelope), envelope.type, envelope.data, clock
        )

    return {LEDGER_CONFIRMED: on_outcome, LEDGER_FAILED: on_outcome}
