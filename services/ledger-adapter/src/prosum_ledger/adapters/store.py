"""The ledger adapter's persistence: ledger commands as event-sourced aggregates, with a small
table of open commands so the executor finds its work without replaying every stream."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, Index, Integer, MetaData, String, Table, select, update

from prosum_contracts import Envelope
from prosum_ledger.application.commands import CommandLog
from prosum_ledger.domain.commands import LEDGER_EVENTS, CommandStatus, LedgerCommand
from prosum_platform.codec import EventCodec
from prosum_platform.eventstore import EventStore, Repository, Transaction

SOURCE = "ledger-adapter"

tables = MetaData()

ledger_commands = Table(
    "ledger_commands",
    tables,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("command_id", String(128), nullable=False, unique=True),
    Column("kind", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_ledger_commands_status", "status", "seq"),
)

CODEC = EventCodec().register(*LEDGER_EVENTS)
_OPEN = (CommandStatus.RECEIVED.value, CommandStatus.SUBMITTED.value)


class SqlCommandLog(CommandLog):
    def __init__(self, tx: Transaction) -> None:
        self._tx = tx
        self._repository = Repository(LedgerCommand, CODEC)

    def get(self, command_id: str) -> LedgerCommand | None:
        return self._repository.get(self._tx, command_id)

    def save(self, command: LedgerCommand) -> None:
        new = command.version == len(command.pending_events)
        self._repository.save(self._tx, command)
        values = {"status": command.status.value, "updated_at": datetime.now(UTC)}
        if new:
            kind = command.kind.value if command.kind else ""
            self._tx.conn.execute(
                ledger_commands.insert().values(command_id=command.id, kind=kind, **values)
            )
        else:
            self._tx.conn.execute(
                update(ledger_commands)
                .where(ledger_commands.c.command_id == command.id)
                .values(**values)
            )

    def publish(self, event_type: str, subject: str, data: dict[str, Any]) -> None:
        self._tx.enqueue(
            Envelope(type=event_type, schema_version=1, source=SOURCE, subject=subject, data=data)
        )

    def open_commands(self, limit: int) -> list[str]:
        rows = self._tx.conn.execute(
            select(ledger_commands.c.command_id)
            .where(ledger_commands.c.status.in_(_OPEN))
            .order_by(ledger_commands.c.seq)
            .limit(limit)
        )
        return [row[0] for row in rows]


def unit_of_work(store: EventStore) -> Any:
    @contextmanager
    def open_unit() -> Iterator[SqlCommandLog]:
        with store.transaction() as tx:
            yield SqlCommandLog(tx)

    return open_unit
