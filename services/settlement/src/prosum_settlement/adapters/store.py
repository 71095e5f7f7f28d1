"""Settlement's store: aggregates in the event store, read models beside them, one transaction."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, MetaData, String, Table, Text

from prosum_auth.trust import participant_status as participant_statuses
from prosum_auth.trust import tables as auth_tables
from prosum_contracts import Envelope
from prosum_platform.codec import EventCodec
from prosum_platform.eventstore import EventStore, Repository, Transaction, as_utc
from prosum_platform.eventstore.bulk import BulkStatement
from prosum_settlement.application.ports import BalanceView, OverdueBatch, SettlementStore
from prosum_settlement.domain.model import SETTLEMENT_EVENTS, FundsRequest, Instruction

SOURCE = "settlement"
CODEC = EventCodec().register(*SETTLEMENT_EVENTS)

tables = MetaData()

instructions = Table(
    "settlement_instructions",
    tables,
    Column("trade_id", String(128), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("batch_id", String(64), nullable=True),
    Column("seller", String(128), nullable=False),
    Column("buyer", String(128), nullable=False),
    Column("market_id", String(128), nullable=False),
    Column("delivery_start", String(40), nullable=False),
    Column("quantity_wh", BigInteger, nullable=False),
    Column("value_ecoin", BigInteger, nullable=False),
    Column("fee_ecoin", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("failures_without_culprit", Integer, nullable=False, server_default="0"),
    Column("version", Integer, nullable=False),
    Column("reason", String(64), nullable=True),
    Column("detail", Text, nullable=True),
    Column("tx_id", String(128), nullable=True),
    Column("block", BigInteger, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_settlement_instructions_status", "status", "created_at"),
    Index("ix_settlement_instructions_batch", "batch_id"),
    Index("ix_settlement_instructions_seller", "seller"),
    Index("ix_settlement_instructions_buyer", "buyer"),
)

batches = Table(
    "settlement_batches",
    tables,
    Column("batch_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("trade_ids", Text, nullable=False),
    Column("trades", Integer, nullable=False),
    Column("tx_id", String(128), nullable=True),
    Column("block", BigInteger, nullable=True),
    Column("reason", String(64), nullable=True),
    Column("failed_trade_id", String(128), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The ledger command as sent (JSON), when it was last sent, and how often it was sent
    # again for want of an outcome.
    Column("command", Text, nullable=True),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Column("resends", Integer, nullable=False, server_default="0"),
    Index("ix_settlement_batches_status", "status"),
    Index("ix_settlement_batches_status_sent", "status", "sent_at"),
)

funds = Table(
    "settlement_funds",
    tables,
    Column("request_id", String(64), primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("participant_id", String(128), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("reference", String(256), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Column("tx_id", String(128), nullable=True),
    Column("block", BigInteger, nullable=True),  # of the mint or burn
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint(
        "kind", "participant_id", "reference", name="uq_settlement_funds_reference"
    ),
    Index("ix_settlement_funds_status", "kind", "status"),
    Index("ix_settlement_funds_participant", "participant_id", "kind"),
)

balances = Table(
    "settlement_balances",
    tables,
    Column("participant_id", String(128), primary_key=True),
    Column("energy_wh", BigInteger, nullable=False),
    Column("ecoin", BigInteger, nullable=False),
    Column("block", BigInteger, nullable=False),
)

reconciliations = Table(
    "settlement_reconciliations",
    tables,
    Column("run_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("participants", Integer, nullable=False),
    Column("block", BigInteger, nullable=True),
    Column("checked", Integer, nullable=True),
    Column("differences", Text, nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True), nullable=True),
)


# The trust projection's tables live in this database too (migration settlement_0002).
for _table in auth_tables.tables.values():
    _table.to_metadata(tables)


def _now() -> datetime:
    return datetime.now(UTC)


_UPDATE_BALANCE = BulkStatement.update(
    balances, ["participant_id"], ["energy_wh", "ecoin", "block"]
)
_INSERT_BALANCE = BulkStatement.insert(balances, ["participant_id", "energy_wh", "ecoin", "block"])


class SqlSettlementStore(SettlementStore):
    def __init__(self, tx: Transaction) -> None:
        self._tx = tx
        self._conn = tx.conn
        self._instructions = Repository(Instruction, CODEC, stream_prefix="trade-")
        self._funds = Repository(FundsRequest, CODEC, stream_prefix="funds-")

    # -- instructions ------------------------------------------------------------------------
    def instruction(self, trade_id: str) -> Instruction | None:
        return self._instructions.get(self._tx, trade_id)

    def existing_instructions(self, trade_ids: Sequence[str]) -> set[str]:
        if not trade_ids:
            return set()
        rows = self._conn.execute(
            sa.select(instructions.c.trade_id).where(instructions.c.trade_id.in_(list(trade_ids)))
        )
        return {row[0] for row in rows}

    def instructions_by_id(self, trade_ids: Sequence[str]) -> list[Instruction]:
        if not trade_ids:
            return []
        rows = self._conn.execute(
            sa.select(instructions).where(instructions.c.trade_id.in_(list(trade_ids)))
        )
        loaded = {
            row.trade_id: Instruction.from_snapshot(row.trade_id, row.version, dict(row._mapping))
            for row in rows
        }
        return [loaded[t] for t in trade_ids if t in loaded]

    def pending_instructions(self, limit: int) -> list[Instruction]:
        return self.instructions_by_id(self.pending_trade_ids(limit))

    def save_instructions(self, changed: Sequence[Instruction]) -> None:
        """Events of all of them in one insert; the read model (their snapshot) updated alike."""
        now = _now()
        created, updated = [], []
        for instruction in changed:
            pending = instruction.pending_events
            if not pending:
                continue
            row = {
                **instruction.snapshot_state(),
                "version": instruction.version,
                "updated_at": now,
            }
            last = pending[-1]
            for name in ("tx_id", "block", "reason"):
                if hasattr(last, name):
                    row[name] = getattr(last, name)
            if hasattr(last, "chain_message"):
                row["detail"] = last.chain_message
            if instruction.version == len(pending):
                created.append({"trade_id": instruction.id, "created_at": now, **row})
            else:
                updated.append({"b_trade_id": instruction.id, **row})
        self._instructions.save_many(self._tx, list(changed))
        if created:
            self._conn.execute(instructions.insert(), created)
        # One executemany per column set; bind names differ from column names, as SQLAlchemy
        # reserves those for its own parameters.
        for columns in {tuple(sorted(r)) for r in updated}:
            group = [
                {f"v_{k}" if k != "b_trade_id" else k: v for k, v in r.items()}
                for r in updated
                if tuple(sorted(r)) == columns
            ]
            values: dict[str, Any] = {
                c: sa.bindparam(f"v_{c}") for c in columns if c != "b_trade_id"
            }
            self._conn.execute(
                instructions.update()
                .where(instructions.c.trade_id == sa.bindparam("b_trade_id"))
                .values(**values),
                group,
            )

    def pending_trade_ids(self, limit: int) -> list[str]:
        rows = self._conn.execute(
            sa.select(instructions.c.trade_id)
            .where(instructions.c.status == "pending")
            .order_by(instructions.c.created_at, instructions.c.trade_id)
            .limit(limit)
        )
        return [row[0] for row in rows]

    def oldest_pending_age_s(self) -> float | None:
        oldest = self._conn.execute(
            sa.select(sa.func.min(instructions.c.updated_at)).where(
                instructions.c.status == "pending"
            )
        ).scalar()
        if oldest is None:
            return None
        age: float = (_now() - as_utc(oldest)).total_seconds()
        return age

    def batch_trade_ids(self, batch_id: str) -> list[str]:
        row = self._conn.execute(
            sa.select(batches.c.trade_ids).where(batches.c.batch_id == batch_id)
        ).first()
        return list(orjson.loads(row[0])) if row else []

    def record_batch(
        self, batch_id: str, trade_ids: Sequence[str], command: dict[str, Any]
    ) -> None:
        now = _now()
        self._conn.execute(
            batches.insert().values(
                batch_id=batch_id,
                status="submitted",
                trade_ids=orjson.dumps(list(trade_ids)).decode(),
                trades=len(trade_ids),
                created_at=now,
                updated_at=now,
                command=orjson.dumps(command).decode(),
                sent_at=now,
                resends=0,
            )
        )

    def batch_status(self, batch_id: str) -> str | None:
        status: str | None = self._conn.execute(
            sa.select(batches.c.status).where(batches.c.batch_id == batch_id)
        ).scalar()
        return status

    def overdue_batches(self, older_than_s: float) -> list[OverdueBatch]:
        cutoff = _now() - timedelta(seconds=older_than_s)
        rows = self._conn.execute(
            sa.select(
                batches.c.batch_id,
                batches.c.command,
                batches.c.resends,
                batches.c.sent_at,
                batches.c.created_at,
            )
            .where(batches.c.status == "submitted", batches.c.sent_at < cutoff)
            .order_by(batches.c.created_at)
        )
        return [
            OverdueBatch(
                batch_id,
                orjson.loads(command) if command is not None else None,
                resends,
                as_utc(sent_at),
                as_utc(created_at),
            )
            for batch_id, command, resends, sent_at, created_at in rows
        ]

    def batch_resent(self, batch_id: str, command: dict[str, Any]) -> None:
        now = _now()
        self._conn.execute(
            batches.update()
            .where(batches.c.batch_id == batch_id)
            .values(
                command=orjson.dumps(command).decode(),
                sent_at=now,
                resends=batches.c.resends + 1,
                updated_at=now,
            )
        )

    def close_batch(
        self,
        batch_id: str,
        status: str,
        *,
        tx_id: str | None = None,
        block: int | None = None,
        reason: str | None = None,
        failed_trade_id: str | None = None,
    ) -> None:
        self._conn.execute(
            batches.update()
            .where(batches.c.batch_id == batch_id)
            .values(
                status=status,
                tx_id=tx_id,
                block=block,
                reason=reason,
                failed_trade_id=failed_trade_id,
                updated_at=_now(),
            )
        )

    def open_batches(self) -> int:
        return int(
            self._conn.execute(
                sa.select(sa.func.count())
                .select_from(batches)
                .where(batches.c.status == "submitted")
            ).scalar_one()
        )

    def participant_status(self, participant_id: str) -> str | None:
        status: str | None = self._conn.execute(
            sa.select(participant_statuses.c.status).where(
                participant_statuses.c.participant_id == participant_id
            )
        ).scalar()
        return status

    # -- top-ups and payouts -----------------------------------------------------------------
    def funds(self, request_id: str) -> FundsRequest | None:
        return self._funds.get(self._tx, request_id)

    def funds_awaiting(self, older_than_s: float) -> list[FundsRequest]:
        cutoff = _now() - timedelta(seconds=older_than_s)
        ids = self._conn.execute(
            sa.select(funds.c.request_id)
            .where(funds.c.status == "approved", funds.c.updated_at < cutoff)
            .order_by(funds.c.updated_at)
        ).scalars()
        found = [self.funds(request_id) for request_id in list(ids)]
        return [f for f in found if f is not None]

    def funds_resent(self, request_id: str) -> None:
        self._conn.execute(
            funds.update().where(funds.c.request_id == request_id).values(updated_at=_now())
        )

    def funds_by_reference(
        self, kind: str, participant_id: str, reference: str
    ) -> FundsRequest | None:
        found = self._conn.execute(
            sa.select(funds.c.request_id).where(
                funds.c.kind == kind,
                funds.c.participant_id == participant_id,
                funds.c.reference == reference,
            )
        ).scalar()
        return self.funds(found) if found else None

    def save_funds(self, request: FundsRequest) -> None:
        new = request.version == len(request.pending_events)
        self._funds.save(self._tx, request)
        request_id = request.id
        values = {
            "status": request.status.value,
            "reason": request.reason,
            "tx_id": request.tx_id,
            "block": request.block,
            "updated_at": _now(),
        }
        if new:
            self._conn.execute(
                funds.insert().values(
                    request_id=request_id,
                    kind=request.kind,
                    participant_id=request.participant_id,
                    amount=request.amount,
                    reference=request.reference,
                    created_at=_now(),
                    **values,
                )
            )
        else:
            self._conn.execute(
                funds.update().where(funds.c.request_id == request_id).values(**values)
            )

    # -- balances and reconciliation ------------------------------------------------------------
    def balances_of(self, participant_ids: Sequence[str]) -> dict[str, BalanceView]:
        if not participant_ids:
            return {}
        rows = self._conn.execute(
            sa.select(balances).where(balances.c.participant_id.in_(list(participant_ids)))
        )
        return {
            r.participant_id: BalanceView(r.participant_id, r.energy_wh, r.ecoin, r.block)
            for r in rows
        }

    def locked_balance(self, participant_id: str) -> BalanceView | None:
        row = self._conn.execute(
            sa.select(balances)
            .where(balances.c.participant_id == participant_id)
            .with_for_update()  # PostgreSQL; SQLite's transactions already take turns
        ).first()
        if row is None:
            return None
        return BalanceView(row.participant_id, row.energy_wh, row.ecoin, row.block)

    def payouts_outstanding(
        self, participant_id: str, reflected_block: int, excluding: str | None = None
    ) -> int:
        unburned = sa.or_(
            funds.c.status.in_(("requested", "approved")),
            # burned in a block the balance held does not reflect yet
            sa.and_(funds.c.status.in_(("completed", "paid")), funds.c.block > reflected_block),
        )
        query = sa.select(sa.func.coalesce(sa.func.sum(funds.c.amount), 0)).where(
            funds.c.kind == "payout", funds.c.participant_id == participant_id, unburned
        )
        if excluding is not None:
            query = query.where(funds.c.request_id != excluding)
        return int(self._conn.execute(query).scalar_one())

    def set_balances(self, changed: Sequence[BalanceView]) -> None:
        if not changed:
            return
        known = set(
            self._conn.execute(
                sa.select(balances.c.participant_id).where(
                    balances.c.participant_id.in_([b.participant_id for b in changed])
                )
            ).scalars()
        )
        rows = [(b.energy_wh, b.ecoin, b.block, b.participant_id) for b in changed]
        _UPDATE_BALANCE.execute(self._conn, [r for r in rows if r[3] in known])
        _INSERT_BALANCE.execute(self._conn, [(r[3], *r[:3]) for r in rows if r[3] not in known])

    def balances(self) -> dict[str, BalanceView]:
        rows = self._conn.execute(sa.select(balances))
        return {
            r.participant_id: BalanceView(r.participant_id, r.energy_wh, r.ecoin, r.block)
            for r in rows
        }

    def start_reconciliation(self, run_id: str, participants: Sequence[str]) -> None:
        self._conn.execute(
            reconciliations.insert().values(
                run_id=run_id, status="running", participants=len(participants), started_at=_now()
            )
        )

    def reconciliation_open(self, run_id: str) -> bool:
        status = self._conn.execute(
            sa.select(reconciliations.c.status).where(reconciliations.c.run_id == run_id)
        ).scalar()
        return status == "running"

    def complete_reconciliation(
        self, run_id: str, block: int, checked: int, differences: list[dict[str, Any]]
    ) -> None:
        self._conn.execute(
            reconciliations.update()
            .where(reconciliations.c.run_id == run_id)
            .values(
                status="clean" if not differences else "differences",
                block=block,
                checked=checked,
                differences=orjson.dumps(differences).decode(),
                completed_at=_now(),
            )
        )

    def publish(self, event_type: str, subject: str, data: dict[str, Any]) -> None:
        self._tx.enqueue(
            Envelope(type=event_type, schema_version=1, source=SOURCE, subject=subject, data=data)
        )

    def publish_many(self, events: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        self._tx.enqueue_many(
            [
                Envelope(type=t, schema_version=1, source=SOURCE, subject=s, data=d)
                for t, s, d in events
            ]
        )


def unit_of_work(store: EventStore) -> Any:
    @contextmanager
    def open_unit() -> Iterator[SqlSettlementStore]:
        with store.transaction() as tx:
            yield SqlSettlementStore(tx)

    return open_unit
