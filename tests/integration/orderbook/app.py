"""The orderbook's application wired on a real store, without HTTP or Kafka: order entry, the
books (fed the commands entry put in the outbox, in order) and the outcome handlers, under a
clock the test moves. Stands in for the ledger with a chain model that refuses to overspend."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa

from prosum_auth.trust import apply_identity_event
from prosum_contracts import Envelope, SchemaRegistry
from prosum_orderbook.adapters.store import (
    BookCache,
    SqlOrderbookStore,
    reading_unit,
    unit_of_work,
)
from prosum_orderbook.adapters.tables import accounts, orders, threshold_usage, trades
from prosum_orderbook.application import outcomes
from prosum_orderbook.application.entry import Authority, MarketDefaults, NewOrder, OrderEntry
from prosum_orderbook.application.matching import Matcher
from prosum_orderbook.application.messages import COMMANDS_TOPIC
from prosum_orderbook.application.ports import OrderbookStore
from prosum_orderbook.application.scheduler import MarketScheduler
from prosum_orderbook.domain.markets import Fees, Mechanism, Schedule, market_id_for
from prosum_orderbook.domain.units import parse_price
from prosum_platform.eventstore import EventStore, create_store_engine
from prosum_platform.eventstore.schema import outbox
from prosum_platform.service.migrations import upgrade

SCHEDULE = Schedule(open_ahead=timedelta(hours=24), gate_closure=timedelta(minutes=5))
NOW = datetime(2026, 11, 21, 12, 0, 7, tzinfo=UTC)
MARKET = market_id_for(datetime(2026, 11, 21, 14, 0, tzinfo=UTC))


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Chain:
    """Balances on chain; refuses a settlement that would overspend, like the ledger."""

    energy: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    ecoin: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    block: int = 10

    def settle(self, trade: dict[str, Any]) -> str | None:
        seller, buyer = trade["seller"], trade["buyer"]
        cost = trade["value_ecoin"] + trade["fee_ecoin"]
        if self.energy[seller] < trade["quantity_wh"]:
            return "insufficient_energy"
        if self.ecoin[buyer] < cost:
            return "insufficient_ecoin"
        self.energy[seller] -= trade["quantity_wh"]
        self.energy[buyer] += trade["quantity_wh"]
        self.ecoin[buyer] -= cost
        self.ecoin[seller] += trade["value_ecoin"]
        self.ecoin["operator"] += trade["fee_ecoin"]
        self.block += 1
        return None


class App:
    def __init__(
        self, url: str, *, mechanism: Mechanism = Mechanism.CONTINUOUS, fees: Fees | None = None
    ) -> None:
        upgrade("prosum_orderbook", url)
        self.engine = create_store_engine(url)
        self.registry = SchemaRegistry.load()
        self.store = EventStore(self.engine, self.registry)
        self.books = BookCache()
        self.uow = unit_of_work(self.store, self.books)
        self.clock = Clock()
        defaults = MarketDefaults(mechanism, fees or Fees(operator_fee=2, grid_fee_per_kwh=10_000))
        self.entry = OrderEntry(
            self.uow,
            SCHEDULE,
            defaults,
            self.clock,
            lambda: str(uuid.uuid4()),
            reading=reading_unit(self.store, self.books),
        )
        self.matcher = Matcher(SCHEDULE, self.clock)
        self.scheduler = MarketScheduler(
            self.uow, SCHEDULE, defaults, self.clock, reading=reading_unit(self.store, self.books)
        )
        self.chain = Chain()
        self._commands_after = 0
        self._events_after = 0

    def close(self) -> None:
        self.engine.dispose()

    # -- neighbours ----------------------------------------------------------------------------
    def identity(self, type_: str, participant_id: str) -> None:
        envelope = Envelope(
            type_, 1, "identity", participant_id, {"participant_id": participant_id}
        )
        with self.uow() as unit:
            assert isinstance(unit, SqlOrderbookStore)
            apply_identity_event(envelope, unit.tx)
            if type_ == "identity.participant_suspended":
                outcomes.participant_inactive(unit, participant_id, self.clock)

    def apply(
        self, handler: Callable[[OrderbookStore, dict[str, Any]], None], data: dict[str, Any]
    ) -> None:
        with self.uow() as unit:
            handler(unit, data)

    def balance(self, participant_id: str) -> None:
        """The ledger reports the participant's chain balances at the current block."""
        self.apply(
            outcomes.balance_changed,
            {
                "participant_id": participant_id,
                "energy_wh": self.chain.energy[participant_id],
                "ecoin": self.chain.ecoin[participant_id],
                "block": self.chain.block,
                "command_id": f"cmd-{uuid.uuid4().hex[:8]}",
            },
        )

    def fund(self, participant_id: str, energy_wh: int = 0, ecoin: int = 0) -> None:
        self.identity("identity.participant_activated", participant_id)
        self.chain.energy[participant_id] += energy_wh
        self.chain.ecoin[participant_id] += ecoin
        self.chain.block += 1
        self.balance(participant_id)

    # -- orders ----------------------------------------------------------------------------------
    def authority(self, participant_id: str, **limits: int) -> Authority:
        return Authority(
            participant_id=participant_id,
            threshold_id=limits.pop("threshold", None) or f"th-{participant_id}",  # type: ignore[arg-type]
            device_id=f"dev-{participant_id}",
            max_open_wh=limits.get("max_open_wh", 10**9),
            max_ecoin=limits.get("max_ecoin", 10**12),
        )

    def place(
        self,
        participant_id: str,
        side: str,
        quantity_wh: int,
        price: str,
        *,
        tif: str = "gtc",
        market: str = MARKET,
        client_order_id: str | None = None,
        authority: Authority | None = None,
    ) -> Any:
        return self.entry.place_many(
            [
                (
                    authority or self.authority(participant_id),
                    NewOrder(market, side, parse_price(price), quantity_wh, tif, client_order_id),
                )
            ]
        )[0]

    def run_books(self) -> int:
        """Apply the commands entry sent, in outbox order, as the books' consumer would."""
        commands = self.pending_commands()
        if commands:
            with self.uow() as unit:
                for envelope in commands:
                    self.matcher.handle(unit, envelope.type, envelope.data)
        return len(commands)

    def pending_commands(self) -> list[Envelope]:
        """The commands entry sent that the books have not been given yet, in outbox order."""
        with self.store.reading() as conn:
            rows = conn.execute(
                sa.select(outbox.c.id, outbox.c.payload)
                .where(outbox.c.topic == COMMANDS_TOPIC, outbox.c.id > self._commands_after)
                .order_by(outbox.c.id)
            ).all()
        if rows:
            self._commands_after = rows[-1][0]
        return [self.registry.decode(payload) for _, payload in rows]

    def skip_commands_before(self, other: App) -> None:
        self._commands_after = other._commands_after

    def events(self, type_: str) -> list[dict[str, Any]]:
        with self.store.reading() as conn:
            payloads = conn.execute(sa.select(outbox.c.payload).order_by(outbox.c.id)).scalars()
            bodies = [orjson.loads(p) for p in payloads]
        return [b["data"] for b in bodies if b["type"] == type_]

    # -- read models -------------------------------------------------------------------------
    def rows(self, table: sa.Table, **where: Any) -> list[Any]:
        query = sa.select(table).where(*(table.c[k] == v for k, v in where.items()))
        with self.store.reading() as conn:
            return list(conn.execute(query).all())

    def account(self, participant_id: str) -> Any:
        [row] = self.rows(accounts, participant_id=participant_id)
        return row

    def order(self, order_id: str) -> Any:
        [row] = self.rows(orders, order_id=order_id)
        return row

    def trade(self, trade_id: str) -> Any:
        [row] = self.rows(trades, trade_id=trade_id)
        return row

    def check_books_balance(self) -> None:
        """Every counter equals the sum of what it counts."""
        all_orders = self.rows(orders)
        all_trades = self.rows(trades)
        for account in self.rows(accounts):
            p = account.participant_id
            open_orders = [o for o in all_orders if o.participant_id == p]
            assert account.reserved_wh == sum(o.reserved_wh for o in open_orders) + sum(
                t.seller_reserved_wh for t in all_trades if t.seller == p
            ), p
            assert account.reserved_ecoin == sum(o.reserved_ecoin for o in open_orders) + sum(
                t.buyer_reserved_ecoin for t in all_trades if t.buyer == p
            ), p
        for usage in self.rows(threshold_usage):
            mine = [o for o in all_orders if o.threshold_id == usage.threshold_id]
            assert usage.open_wh == sum(o.remaining_wh for o in mine)
            assert usage.open_value_ecoin == sum(
                o.remaining_wh * o.price // 1_000_000 for o in mine if o.side == "buy"
            )
        for o in all_orders:
            assert o.quantity_wh == o.filled_wh + o.remaining_wh + o.cancelled_wh + o.expired_wh, o
            if o.status in ("filled", "cancelled", "expired", "rejected"):
                assert (o.remaining_wh, o.reserved_wh, o.reserved_ecoin) == (0, 0, 0), o
