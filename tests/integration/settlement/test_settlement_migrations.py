"""Settlement migration 0003 on rows written before it: the count of batches failing without a
culprit is what replaying each instruction's events gives."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from prosum_platform.eventstore import create_store_engine
from prosum_platform.service.migrations import upgrade


def test_failures_without_culprit_are_backfilled(store_url: str) -> None:
    upgrade("prosum_settlement", store_url, "settlement_0002")
    now = datetime.now(UTC)
    instruction = {
        "batch_id": None,
        "seller": "s",
        "buyer": "b",
        "market_id": "m-1",
        "delivery_start": "2026-11-22T10:00:00Z",
        "quantity_wh": 1_000,
        "value_ecoin": 250,
        "fee_ecoin": 3,
        "attempts": 4,
        "version": 9,
        "created_at": now,
        "updated_at": now,
    }
    rows = [
        ("t-blind", "failed", "b-blind"),  # failed in a batch without a culprit
        ("t-named", "failed", "b-named"),  # failed as the culprit the chain named
        ("t-pending", "pending", None),
        ("t-batched", "batched", "b-open"),
    ]
    batch = {"trades": 1, "created_at": now, "updated_at": now, "trade_ids": "[]"}
    engine = create_store_engine(store_url)
    try:
        with engine.begin() as conn:
            meta = sa.MetaData()
            instructions = sa.Table("settlement_instructions", meta, autoload_with=conn)
            batches = sa.Table("settlement_batches", meta, autoload_with=conn)
            conn.execute(
                batches.insert(),
                [
                    {**batch, "batch_id": "b-blind", "status": "failed", "failed_trade_id": None},
                    {**batch, "batch_id": "b-named", "status": "failed", "failed_trade_id": "x"},
                    {**batch, "batch_id": "b-open", "status": "submitted", "failed_trade_id": None},
                ],
            )
            conn.execute(
                instructions.insert(),
                [
                    {**instruction, "trade_id": t, "status": status, "batch_id": batch_id}
                    for t, status, batch_id in rows
                ],
            )
        upgrade("prosum_settlement", store_url)
        with engine.connect() as conn:
            found = dict(
                conn.execute(
                    sa.text(
                        "SELECT trade_id, failures_without_culprit FROM settlement_instructions"
                    )
                ).all()
            )
    finally:
        engine.dispose()
    assert found == {"t-blind": 1, "t-named": 0, "t-pending": 0, "t-batched": 0}
