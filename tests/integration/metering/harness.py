"""Metering's application wired to a real store (SQLite or PostgreSQL), without Kafka: identity
and ledger events are applied the way the platform's consumer applies them (in one transaction
with the processed-message record), and what metering publishes is read from its outbox."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prosum_contracts import Envelope, SchemaRegistry
from prosum_metering.adapters.signatures import InlineVerifier
from prosum_metering.adapters.store import read_view, unit_of_work
from prosum_metering.adapters.tables import tables
from prosum_metering.application.batches import BatchService
from prosum_metering.application.corrections import CorrectionService
from prosum_metering.application.ingest import IngestService, Item, SubmissionResult, Submitter
from prosum_metering.application.queries import DataService
from prosum_metering.entrypoints.consumers import metering_handlers
from prosum_platform.eventstore import EventStore, create_store_engine, metadata
from prosum_platform.eventstore.schema import outbox
from tests.unit.metering.meters import Meter

CONSUMER = "metering"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingVerifier(InlineVerifier):
    """The real verifier, counting the signatures it checks."""

    def __init__(self) -> None:
        self.checked = 0

    def verify_many(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
        self.checked += len(items)
        return super().verify_many(items)


class Metering:
    def __init__(self, url: str, clock: Clock, *, max_leaves: int = 16384) -> None:
        self.engine = create_store_engine(url)
        metadata.create_all(self.engine)
        tables.create_all(self.engine)
        self.registry = SchemaRegistry.load()
        self.store = EventStore(self.engine, self.registry)
        self.clock = clock
        uow, view = unit_of_work(self.store), read_view(self.store)
        self.verifier = CountingVerifier()
        self.ingest = IngestService(uow, view, self.verifier, clock)
        self.batches = BatchService(uow, clock, max_leaves=max_leaves)
        self.data = DataService(view)
        self.corrections = CorrectionService(uow, clock)
        self._handlers = metering_handlers()
        self._seen_outbox = 0

    def close(self) -> None:
        self.engine.dispose()

    def deliver(self, *envelopes: Envelope) -> list[bool]:
        """Apply events as the consumer does; False for one already applied."""
        applied = []
        for envelope in envelopes:
            self.registry.validate(envelope)
            with self.store.transaction() as tx:
                if not tx.record_processed(CONSUMER, envelope.event_id):
                    applied.append(False)
                    continue
                handler = self._handlers.get(envelope.type)
                if handler is not None:
                    handler(envelope, tx)
                applied.append(True)
        return applied

    def submit(
        self, meter: Meter | Submitter, readings: Iterable[dict[str, Any]], fmt: str = "json"
    ) -> SubmissionResult:
        who = (
            meter
            if isinstance(meter, Submitter)
            else Submitter(meter.participant_id, meter.metering_point, f"th-{meter.device_id}")
        )
        return self.ingest.submit(who, [Item(i, r) for i, r in enumerate(readings)], fmt)

    def published(self, type_: str | None = None) -> list[Envelope]:
        """Everything metering has put in its outbox, in order (optionally of one type)."""
        with self.engine.connect() as conn:
            rows = conn.execute(outbox.select().order_by(outbox.c.id)).all()
        found = [self.registry.decode(row.payload) for row in rows]
        return [e for e in found if type_ is None or e.type == type_]

    def new_published(self, type_: str | None = None) -> list[Envelope]:
        """What was published since the last call."""
        everything = self.published()
        fresh = everything[self._seen_outbox :]
        self._seen_outbox = len(everything)
        return [e for e in fresh if type_ is None or e.type == type_]

    def mints(self) -> list[dict[str, Any]]:
        return [e.data for e in self.published("ledger.mint_energy")]


def ledger_outcome(command_id: str, *, confirmed: bool = True, **extra: Any) -> Envelope:
    data: dict[str, Any]
    if confirmed:
        data = {
            "command_id": command_id,
            "command_type": "ledger.anchor_hash"
            if command_id.startswith("anchor")
            else "ledger.mint_energy",
            "backend": "evm",
            "tx_id": "0x" + "ab" * 32,
            "block": 42,
            "fee": 0,
            **extra,
        }
    else:
        data = {
            "command_id": command_id,
            "command_type": "ledger.anchor_hash"
            if command_id.startswith("anchor")
            else "ledger.mint_energy",
            "backend": "evm",
            "reason": "chain_unavailable",
            "chain_message": "the node did not answer",
            **extra,
        }
    return Envelope(
        type="ledger.command_confirmed" if confirmed else "ledger.command_failed",
        schema_version=1,
        source="ledger-adapter",
        subject=command_id,
        data=data,
    )


def by_status(result: SubmissionResult) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for r in result.results:
        out.setdefault(r.status, []).append(r.position)
    return out


def reasons(result: SubmissionResult) -> dict[int, str | None]:
    return {r.position: r.reason for r in result.results if r.status == "rejected"}


Factory = Callable[..., Metering]
