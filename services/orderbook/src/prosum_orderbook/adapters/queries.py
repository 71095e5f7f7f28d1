"""The read side: depth, orders, trades (the paper's ``exchange_list``), the public tape.

Plain queries on the read models over a read-only connection; any instance answers for any
market, whichever instance owns its book.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from prosum_contracts import format_timestamp
from prosum_orderbook.adapters.store import order_record, trade_record
from prosum_orderbook.adapters.tables import accounts, markets, orders, reconciliations, trades
from prosum_orderbook.application.ports import OrderRecord, TradeRecord
from prosum_orderbook.domain.markets import INTERVAL, delivery_start
from prosum_orderbook.domain.units import format_price
from prosum_platform.eventstore import EventStore, as_utc

_IN_BOOK = ("open", "partially_filled")


def _ts(moment: datetime | None) -> str | None:
    moment = as_utc(moment)
    return format_timestamp(moment) if moment is not None else None


def order_view(order: OrderRecord) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "client_order_id": order.client_order_id,
        "participant_id": order.participant_id,
        "market_id": order.market_id,
        "side": order.side,
        "price_per_kwh": format_price(order.price),
        "quantity_wh": order.quantity_wh,
        "time_in_force": order.time_in_force,
        "status": order.status,
        "remaining_wh": order.remaining_wh,
        "filled_wh": order.filled_wh,
        "cancelled_wh": order.cancelled_wh,
        "expired_wh": order.expired_wh,
        "reserved_wh": order.reserved_wh,
        "reserved_ecoin": order.reserved_ecoin,
        "reason": order.reason,
        "created_at": _ts(order.created_at),
        "updated_at": _ts(order.updated_at),
    }


def trade_view(trade: TradeRecord) -> dict[str, Any]:
    return {
        "trade_id": trade.trade_id,
        "market_id": trade.market_id,
        "seller": trade.seller,
        "buyer": trade.buyer,
        "sell_order_id": trade.sell_order_id,
        "buy_order_id": trade.buy_order_id,
        "quantity_wh": trade.quantity_wh,
        "price_per_kwh": format_price(trade.price),
        "value_ecoin": trade.value_ecoin,
        "fee_ecoin": trade.fee_ecoin,
        "mechanism": trade.mechanism,
        "executed_at": _ts(trade.executed_at),
        "status": trade.status,
        "tx_id": trade.tx_id,
        "block": trade.settled_block,
        "failure_reason": trade.failure_reason,
    }


class ReadModels:
    def __init__(self, store: EventStore) -> None:
        self._store = store

    def reconciliations(self, limit: int) -> list[dict[str, Any]]:
        with self._store.reading() as conn:
            rows = conn.execute(
                sa.select(reconciliations)
                .order_by(reconciliations.c.completed_at.desc())
                .limit(limit)
            ).all()
        return [
            {
                "run_id": row.run_id,
                "block": row.block,
                "checked": row.checked,
                "skipped": row.skipped,
                "differences": orjson.loads(row.differences),
                "completed_at": _ts(row.completed_at),
            }
            for row in rows
        ]

    def market(self, market_id: str) -> dict[str, Any] | None:
        with self._store.reading() as conn:
            row = conn.execute(sa.select(markets).where(markets.c.market_id == market_id)).first()
        return _market_view(row) if row else None

    def markets(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        query = sa.select(markets).order_by(markets.c.delivery_start).limit(limit)
        if status is not None:
            query = query.where(markets.c.status == status)
        with self._store.reading() as conn:
            return [_market_view(row) for row in conn.execute(query)]

    def depth(self, market_id: str, levels: int) -> dict[str, Any]:
        query = (
            sa.select(
                orders.c.side,
                orders.c.price,
                sa.func.sum(orders.c.remaining_wh),
                sa.func.count(),
            )
            .where(orders.c.market_id == market_id, orders.c.status.in_(_IN_BOOK))
            .group_by(orders.c.side, orders.c.price)
        )
        with self._store.reading() as conn:
            rows = conn.execute(query).all()
        bids = sorted((r for r in rows if r[0] == "buy"), key=lambda r: -r[1])[:levels]
        asks = sorted((r for r in rows if r[0] == "sell"), key=lambda r: r[1])[:levels]

        def level(row: Any) -> dict[str, Any]:
            return {
                "price_per_kwh": format_price(row[1]),
                "quantity_wh": int(row[2]),
                "orders": row[3],
            }

        return {
            "market_id": market_id,
            "bids": [level(r) for r in bids],
            "asks": [level(r) for r in asks],
        }

    def order(self, order_id: str) -> OrderRecord | None:
        with self._store.reading() as conn:
            row = conn.execute(sa.select(orders).where(orders.c.order_id == order_id)).first()
        return order_record(row) if row else None

    def orders_of(
        self, participant_id: str, status: str | None, market_id: str | None, limit: int
    ) -> list[dict[str, Any]]:
        query = (
            sa.select(orders)
            .where(orders.c.participant_id == participant_id)
            .order_by(orders.c.created_at.desc())
            .limit(limit)
        )
        if status is not None:
            query = query.where(orders.c.status == status)
        if market_id is not None:
            query = query.where(orders.c.market_id == market_id)
        with self._store.reading() as conn:
            return [order_view(order_record(row)) for row in conn.execute(query)]

    def trades(
        self,
        *,
        status: str | None = None,
        seller: str | None = None,
        buyer: str | None = None,
        party: str | None = None,
        market_id: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        query = sa.select(trades).order_by(trades.c.executed_at.desc(), trades.c.seq.desc())
        if status is not None:
            query = query.where(trades.c.status == status)
        if seller is not None:
            query = query.where(trades.c.seller == seller)
        if buyer is not None:
            query = query.where(trades.c.buyer == buyer)
        if party is not None:
            query = query.where(sa.or_(trades.c.seller == party, trades.c.buyer == party))
        if market_id is not None:
            query = query.where(trades.c.market_id == market_id)
        with self._store.reading() as conn:
            return [trade_view(trade_record(row)) for row in conn.execute(query.limit(limit))]

    def tape(self, market_id: str | None, limit: int) -> list[dict[str, Any]]:
        query = (
            sa.select(
                trades.c.market_id,
                trades.c.seq,
                trades.c.quantity_wh,
                trades.c.price,
                trades.c.mechanism,
                trades.c.executed_at,
            )
            .order_by(trades.c.executed_at.desc(), trades.c.seq.desc())
            .limit(limit)
        )
        if market_id is not None:
            query = query.where(trades.c.market_id == market_id)
        with self._store.reading() as conn:
            rows = conn.execute(query).all()
        out = []
        for row in rows:
            start = delivery_start(row.market_id)
            out.append(
                {
                    "market_id": row.market_id,
                    "delivery_start": format_timestamp(start),
                    "delivery_end": format_timestamp(start + INTERVAL),
                    "sequence": row.seq,
                    "quantity_wh": row.quantity_wh,
                    "price_per_kwh": format_price(row.price),
                    "mechanism": row.mechanism,
                    "executed_at": _ts(row.executed_at),
                }
            )
        return out

    def cover(self, participant_id: str) -> dict[str, Any]:
        with self._store.reading() as conn:
            row = conn.execute(
                sa.select(accounts).where(accounts.c.participant_id == participant_id)
            ).first()
        if row is None:
            energy = ecoin = reserved_wh = reserved_ecoin = 0
            block = None
        else:
            energy, ecoin, reserved_wh, reserved_ecoin = (
                row.energy_wh,
                row.ecoin,
                row.reserved_wh,
                row.reserved_ecoin,
            )
            block = row.block if row.block >= 0 else None
        return {
            "participant_id": participant_id,
            "block": block,
            "energy_wh": energy,
            "ecoin": ecoin,
            "reserved_wh": reserved_wh,
            "reserved_ecoin": reserved_ecoin,
            "free_wh": energy - reserved_wh,
            "free_ecoin": ecoin - reserved_ecoin,
        }


def _market_view(row: Any) -> dict[str, Any]:
    return {
        "market_id": row.market_id,
        "delivery_start": _ts(row.delivery_start),
        "delivery_end": _ts(row.delivery_end),
        "opens_at": _ts(row.opens_at),
        "gate_closure": _ts(row.gate_closure),
        "mechanism": row.mechanism,
        "operator_fee_ecoin": row.operator_fee,
        "grid_fee_per_kwh": format_price(row.grid_fee_per_kwh),
        "status": row.status,
        "closed_at": _ts(row.closed_at),
        "trades": row.trades,
        "traded_wh": row.traded_wh,
        "last_price_per_kwh": format_price(row.last_price) if row.last_price else None,
    }
