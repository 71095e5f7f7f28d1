"""Read side: what ops, partners and participants look at."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import Engine

from prosum_platform.eventstore import as_utc
from prosum_settlement.adapters.store import (
    balances,
    batches,
    funds,
    instructions,
    reconciliations,
)


def _rows(engine: Engine, query: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def list_instructions(
    engine: Engine,
    *,
    status: str | None = None,
    seller: str | None = None,
    buyer: str | None = None,
    participant: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    query = sa.select(instructions).order_by(instructions.c.created_at.desc()).limit(limit)
    if status:
        query = query.where(instructions.c.status == status)
    if seller:
        query = query.where(instructions.c.seller == seller)
    if buyer:
        query = query.where(instructions.c.buyer == buyer)
    if participant:
        query = query.where(
            sa.or_(instructions.c.seller == participant, instructions.c.buyer == participant)
        )
    return _rows(engine, query)


def get_instruction(engine: Engine, trade_id: str) -> dict[str, Any] | None:
    found = _rows(engine, sa.select(instructions).where(instructions.c.trade_id == trade_id))
    return found[0] if found else None


def list_batches(engine: Engine, status: str | None, limit: int) -> list[dict[str, Any]]:
    query = sa.select(batches).order_by(batches.c.created_at.desc()).limit(limit)
    if status:
        query = query.where(batches.c.status == status)
    rows = _rows(engine, query)
    for row in rows:
        row["trade_ids"] = orjson.loads(row["trade_ids"])
        row.pop("command", None)  # the trades again, in the ledger's terms
    return rows


def batch_health(engine: Engine, resend_after_s: float) -> dict[str, Any]:
    """What ``/ready`` says of the batches awaiting the ledger: how many, the oldest, and
    those waiting longer than the resend period since first sent (sent again, still without
    an outcome). On a read-only connection: it never waits for SQLite's write lock."""
    with engine.connect().execution_options(prosum_read_only=True) as conn:
        rows = conn.execute(
            sa.select(batches.c.batch_id, batches.c.created_at, batches.c.resends).where(
                batches.c.status == "submitted"
            )
        ).all()
    now = datetime.now(UTC)
    ages = {batch_id: (now - as_utc(created)).total_seconds() for batch_id, created, _ in rows}
    overdue = sorted(b for b, age in ages.items() if age > resend_after_s)
    report: dict[str, Any] = {
        "awaiting_outcome": len(rows),
        "oldest_s": round(max(ages.values()), 1) if ages else None,
        "overdue": len(overdue),
        "resends": sum(resends for _, _, resends in rows),
    }
    if overdue:
        report["warning"] = (
            f"{len(overdue)} batch(es) have waited over {resend_after_s:.0f} s for the ledger's "
            f"outcome and are being sent again (e.g. {overdue[0]}): is the ledger adapter "
            "running, and its consumer not dead-lettering settle commands?"
        )
    return report


def list_funds(
    engine: Engine, kind: str, status: str | None, participant: str | None, limit: int
) -> list[dict[str, Any]]:
    query = (
        sa.select(funds)
        .where(funds.c.kind == kind)
        .order_by(funds.c.created_at.desc())
        .limit(limit)
    )
    if status:
        query = query.where(funds.c.status == status)
    if participant:
        query = query.where(funds.c.participant_id == participant)
    return _rows(engine, query)


def get_funds(engine: Engine, kind: str, request_id: str) -> dict[str, Any] | None:
    found = _rows(
        engine, sa.select(funds).where(funds.c.kind == kind, funds.c.request_id == request_id)
    )
    return found[0] if found else None


def get_balance(engine: Engine, participant_id: str) -> dict[str, Any] | None:
    found = _rows(engine, sa.select(balances).where(balances.c.participant_id == participant_id))
    return found[0] if found else None


def list_reconciliations(engine: Engine, limit: int) -> list[dict[str, Any]]:
    rows = _rows(
        engine,
        sa.select(reconciliations).order_by(reconciliations.c.started_at.desc()).limit(limit),
    )
    for row in rows:
        row["differences"] = orjson.loads(row["differences"]) if row["differences"] else []
    return rows


def get_reconciliation(engine: Engine, run_id: str) -> dict[str, Any] | None:
    rows = [r for r in list_reconciliations(engine, 10_000) if r["run_id"] == run_id]
    return rows[0] if rows else None
