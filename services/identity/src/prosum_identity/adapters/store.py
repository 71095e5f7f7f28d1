"""Identity's persistence on the platform's event store: aggregates as streams, read models
projected in the same transaction, integration events through the outbox, and the key vault."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import delete, insert, select

from prosum_contracts import Envelope
from prosum_identity.adapters.crypto import KeySealer
from prosum_identity.adapters.projections import project
from prosum_identity.adapters.tables import key_vault
from prosum_identity.application.ports import IdentityStore, UnitOfWork
from prosum_identity.domain import ALL_EVENTS
from prosum_identity.domain.base import IdentityAggregate
from prosum_platform.codec import EventCodec
from prosum_platform.eventstore import EventStore, Repository, Transaction

SOURCE = "identity"
CODEC = EventCodec().register(*ALL_EVENTS)

A = TypeVar("A", bound=IdentityAggregate)


class SqlIdentityStore(IdentityStore):
    def __init__(self, tx: Transaction, sealer: KeySealer, cause: Envelope | None = None) -> None:
        self._tx = tx
        self._sealer = sealer
        # The event being consumed, when this transaction applies one: events published here
        # carry its correlation id and trace.
        self._cause = cause
        self._repositories: dict[type[Any], Repository[Any]] = {}

    def _repository(self, cls: type[A]) -> Repository[A]:
        repository = self._repositories.get(cls)
        if repository is None:
            repository = self._repositories[cls] = Repository(cls, CODEC)
        return repository

    def get(self, cls: type[A], key: str) -> A | None:
        return self._repository(cls).get(self._tx, cls.stream(key))

    def save(self, aggregate: IdentityAggregate) -> None:
        pending = aggregate.pending_events
        first = aggregate.version - len(pending)
        self._repository(type(aggregate)).save(self._tx, aggregate)
        for offset, event in enumerate(pending, start=1):
            project(self._tx.conn, aggregate.id, first + offset, event)

    def publish(self, event_type: str, subject: str, data: dict[str, Any]) -> None:
        if self._cause is not None:
            envelope = self._cause.caused(event_type, 1, SOURCE, subject, data)
        else:
            envelope = Envelope(
                type=event_type, schema_version=1, source=SOURCE, subject=subject, data=data
            )
        self._tx.enqueue(envelope)

    def put_private_key(self, kid: str, private_key: bytes) -> None:
        self._tx.conn.execute(
            insert(key_vault).values(
                kid=kid,
                sealed_private_key=self._sealer.seal(private_key),
                created_at=datetime.now(UTC),
            )
        )

    def private_key(self, kid: str) -> bytes | None:
        sealed = self._tx.conn.execute(
            select(key_vault.c.sealed_private_key).where(key_vault.c.kid == kid)
        ).scalar()
        return self._sealer.unseal(sealed) if sealed is not None else None

    def discard_private_key(self, kid: str) -> None:
        self._tx.conn.execute(delete(key_vault).where(key_vault.c.kid == kid))


def unit_of_work(store: EventStore, sealer: KeySealer) -> UnitOfWork:
    @contextmanager
    def open_unit() -> Iterator[IdentityStore]:
        with store.transaction() as tx:
            yield SqlIdentityStore(tx, sealer)

    def factory() -> AbstractContextManager[IdentityStore]:
        return open_unit()

    return factory
