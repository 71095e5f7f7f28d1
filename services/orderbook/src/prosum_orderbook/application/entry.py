"""Order entry: what the API does with a new order, a cancel or a reduce.

Placing an order checks, in one transaction, everything that can be checked without the book:
the market exists and is open, the client order id is new, the order stays within its
threshold's open limits, and the participant's free balance covers it. It then reserves the
cover, records the submission and sends the order to its market's book as a command (through the
outbox, keyed by market). Any refusal raises ``OrderRefused`` inside the transaction, so nothing
of a refused order is kept. The book matches it moments later on whichever instance owns the
market's partition; the API answers 202 with the order in status ``pending``.

The threshold's signature, expiry, revocation, participant status, action and per-order limits
are checked before this by ``prosum_auth.TokenVerifier``; its cumulative limits are checked
here: ``max_open_wh`` bounds the remaining quantity of all open orders (bids and asks) placed
under that threshold, ``max_ecoin`` the value at their limit price of its open bids (fees
excluded). Limits are per threshold, not per participant: a threshold is one device's
capability, and two devices of one participant each hold their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from prosum_contracts import format_timestamp
from prosum_orderbook.application.messages import (
    CANCEL_ORDER,
    OPEN_MARKET,
    PLACE_ORDER,
    REDUCE_ORDER,
)
from prosum_orderbook.application.ports import (
    Clock,
    Contention,
    DuplicateClientOrderId,
    MarketRecord,
    NeedsWriteLock,
    OrderbookStore,
    OrderRecord,
    Submission,
    ThresholdClaim,
    UnitOfWork,
)
from prosum_orderbook.domain.book import REQUESTED
from prosum_orderbook.domain.cover import Reservation, open_value, order_reservation
from prosum_orderbook.domain.markets import (
    Fees,
    MarketIdError,
    MarketWindow,
    Mechanism,
    Schedule,
)
from prosum_orderbook.domain.orders import (
    BUY,
    IOC,
    OPEN_STATUSES,
    SELL,
    OrderStatus,
    OrderSubmitted,
)
from prosum_orderbook.domain.units import format_price

ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class _Draft:
    order: OrderRecord
    submission: Submission
    reservation: Reservation
    claim: ThresholdClaim
    gate_closure: datetime


class OrderRefused(Exception):
    """The API refuses the request; ``status`` is the HTTP status, ``reason`` a stable code."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Authority:
    """What a verified threshold lets its holder do."""

    participant_id: str
    threshold_id: str
    device_id: str
    max_open_wh: int
    max_ecoin: int


@dataclass(frozen=True, slots=True)
class NewOrder:
    market_id: str
    side: str
    price: int
    quantity_wh: int
    time_in_force: str
    client_order_id: str | None = None


@dataclass(frozen=True, slots=True)
class MarketDefaults:
    """How markets are set up when nobody chose otherwise before they opened."""

    mechanism: Mechanism
    fees: Fees


SCHEDULED = "scheduled"
"""A market whose set-up ops chose before it opened."""


def new_market(window: MarketWindow, defaults: MarketDefaults, status: str) -> MarketRecord:
    return MarketRecord(
        market_id=window.market_id,
        delivery_start=window.delivery_start,
        delivery_end=window.delivery_end,
        opens_at=window.opens_at,
        gate_closure=window.gate_closure,
        mechanism=defaults.mechanism,
        fees=defaults.fees,
        status=status,
    )


def open_market(
    store: OrderbookStore, schedule: Schedule, defaults: MarketDefaults, market_id: str
) -> MarketRecord:
    """Open a market that is open by the schedule: create its record (or promote the one ops
    scheduled) and tell its book to open. A market already open (or closed) is left as it is."""
    market = store.market(market_id)
    if market is None:
        market = store.add_market(new_market(schedule.window(market_id), defaults, "open"))
        if market.status != "open":  # someone else scheduled it meanwhile
            return open_market(store, schedule, defaults, market_id)
    elif market.status == SCHEDULED:
        market = store.schedule_market(replace(market, status="open"))
    else:
        return market
    store.publish(OPEN_MARKET, market_id, {"market_id": market_id, **market_config(market)})
    return market


def market_config(market: MarketRecord) -> dict[str, object]:
    """The market's set-up, carried by every command so the book opens as the API saw it."""
    return {
        "mechanism": market.mechanism.value,
        "operator_fee_ecoin": market.fees.operator_fee,
        "grid_fee_per_kwh": format_price(market.fees.grid_fee_per_kwh),
    }


class OrderEntry:
    def __init__(
        self,
        unit_of_work: UnitOfWork,
        schedule: Schedule,
        defaults: MarketDefaults,
        clock: Clock,
        new_order_id: Callable[[], str],
        reading: UnitOfWork | None = None,
    ) -> None:
        self._uow = unit_of_work
        self._reading = reading
        self._schedule = schedule
        self._defaults = defaults
        self._clock = clock
        self._new_order_id = new_order_id
        self._markets: dict[str, MarketRecord] = {}

    # -- markets ------------------------------------------------------------------------------
    def ensure_market(self, store: OrderbookStore, market_id: str) -> MarketRecord:
        """The market's record, opened now (its book told to open) if it is open by the
        schedule and the calendar has not opened it yet. Refuses unknown, not yet open and
        closed markets.

        Records read from the store are kept: a market's set-up never changes, and whether it
        is still open is decided by the clock (gate closure), so later orders need no query.
        """
        try:
            window = self._schedule.window(market_id)
        except MarketIdError as exc:
            raise OrderRefused(404, "unknown_market", str(exc)) from None
        state = window.state_at(self._clock())
        if state == "not_open":
            raise OrderRefused(
                409,
                "market_not_open",
                f"market {market_id} opens at {format_timestamp(window.opens_at)}",
            )
        if state == "closed":
            raise OrderRefused(
                409,
                "market_closed",
                f"market {market_id} closed at gate closure {format_timestamp(window.gate_closure)}",
            )
        market = self._markets.get(market_id)
        if market is not None:
            return market
        market = store.market(market_id)
        if market is not None and market.status == "open":
            self._markets[market_id] = market  # committed: a market opened below is not yet
            return market
        market = open_market(store, self._schedule, self._defaults, market_id)
        if market.status != "open":
            raise OrderRefused(409, "market_closed", f"market {market_id} is closed")
        return market

    def choose_mechanism(self, market_id: str, mechanism: Mechanism) -> MarketRecord:
        """Ops: set a market's mechanism before it opens (or open it now with it, if it is open
        by the schedule and nobody opened it yet). A market keeps the mechanism it opened with."""
        try:
            window = self._schedule.window(market_id)
        except MarketIdError as exc:
            raise OrderRefused(404, "unknown_market", str(exc)) from None
        state = window.state_at(self._clock())
        if state == "closed":
            raise OrderRefused(409, "market_closed", f"market {market_id} is closed")
        with self._uow() as store:
            market = store.market(market_id)
            if market is not None and market.status == SCHEDULED:
                return store.schedule_market(replace(market, mechanism=mechanism))
            if market is not None:
                if market.mechanism is not mechanism:
                    raise OrderRefused(
                        409,
                        "market_already_open",
                        f"market {market_id} opened as a {market.mechanism.value} market",
                    )
                return market
            chosen = MarketDefaults(mechanism, self._defaults.fees)
            if state == "not_open":
                return store.schedule_market(new_market(window, chosen, SCHEDULED))
            return open_market(store, self._schedule, chosen, market_id)

    # -- orders -------------------------------------------------------------------------------
    def place(self, authority: Authority, new: NewOrder) -> OrderRecord:
        for attempt in range(ATTEMPTS):
            try:
                with self._uow() as store:
                    self._check_standing(store, authority, {})
                    return self._place(store, authority, new)
            except Contention:
                if attempt == ATTEMPTS - 1:
                    raise
                time.sleep(0.005 * 2**attempt)
        raise AssertionError("unreachable")

    def place_many(
        self, requests: Sequence[tuple[Authority, NewOrder]]
    ) -> list[OrderRecord | OrderRefused]:
        """Place several orders in one transaction; each is accepted or refused on its own.

        Each threshold is checked against revocations and its participant's status here, in
        the transaction that accepts the order (once per threshold and group). The checks of
        one order leave nothing behind when they refuse it (cover and threshold use are taken
        together or not at all), so a refusal does not undo the others. Orders are taken in
        participant order (each participant's in the order they came), so that concurrent
        groups lock participants' rows in one order and cannot deadlock. A group that loses to
        a concurrent transaction anyway is tried again; one that still fails (a client order
        id taken concurrently on another instance, say) places every order in a transaction
        of its own.
        """
        sequence = sorted(range(len(requests)), key=lambda i: requests[i][0].participant_id)
        for _attempt in range(ATTEMPTS):
            try:
                # Everything that does not depend on balances, made ready before the write
                # transaction (the market, the client order id, the records, the events).
                drafts = self._drafts(requests)
                with self._uow() as store:
                    results: list[OrderRecord | OrderRefused | None] = [None] * len(requests)
                    # Every threshold of the group is checked at once (revocations, status).
                    refusals = store.credential_refusals(
                        {(a.threshold_id, a.device_id, a.participant_id) for a, _ in requests}
                    )
                    standing: dict[Authority, str | None] = {
                        a: refusals[(a.threshold_id, a.device_id, a.participant_id)]
                        for a, _ in requests
                    }
                    store.hold_cover(
                        {
                            (a.participant_id, a.threshold_id)
                            for a, _ in requests
                            if standing[a] is None
                        }
                    )
                    taken: set[tuple[str, str]] = set()  # client order ids placed here
                    for i in sequence:
                        authority, new = requests[i]
                        try:
                            self._check_standing(store, authority, standing)
                            if drafts is None:
                                results[i] = self._place(store, authority, new)
                            else:
                                results[i] = self._place_drafted(store, authority, drafts[i], taken)
                        except OrderRefused as refusal:
                            results[i] = refusal
                    return [r for r in results if r is not None]
            except Contention:
                time.sleep(0.005 * 2**_attempt)
                continue
            except DuplicateClientOrderId:
                break
        outcomes: list[OrderRecord | OrderRefused] = []
        for authority, new in requests:
            try:
                outcomes.append(self.place(authority, new))
            except DuplicateClientOrderId:
                outcomes.append(_duplicate(new))
            except Contention:
                outcomes.append(
                    OrderRefused(503, "busy", "the order could not be recorded; send it again")
                )
            except OrderRefused as refusal:
                outcomes.append(refusal)
        return outcomes

    def _check_standing(
        self, store: OrderbookStore, authority: Authority, known: dict[Authority, str | None]
    ) -> None:
        if authority not in known:
            known[authority] = store.credential_refusal(
                authority.threshold_id, authority.device_id, authority.participant_id
            )
        refused = known[authority]
        if refused is not None:
            raise OrderRefused(403, refused, "this credential is no longer honoured")

    def _drafts(
        self, requests: Sequence[tuple[Authority, NewOrder]]
    ) -> list[_Draft | OrderRefused] | None:
        """The group's orders drafted on a reading unit of work, or None when one of them
        needs a write to draft (a market to open): the group is then placed in the write
        transaction from the start."""
        if self._reading is None:
            return None
        try:
            with self._reading() as store:
                drafts: list[_Draft | OrderRefused] = []
                for authority, new in requests:
                    try:
                        drafts.append(self._draft(store, authority, new))
                    except OrderRefused as refusal:
                        drafts.append(refusal)
                return drafts
        except NeedsWriteLock:
            return None

    def _draft(self, store: OrderbookStore, authority: Authority, new: NewOrder) -> _Draft:
        """What ``_place`` works out before it reserves: refusals that do not depend on the
        balances, the order, its submission event and its command."""
        now = self._clock()
        market = self.ensure_market(store, new.market_id)
        if new.time_in_force == IOC and market.mechanism is Mechanism.CALL_AUCTION:
            raise OrderRefused(
                422,
                "ioc_not_in_call_auction",
                "a call-auction market only takes orders good till gate closure",
            )
        participant = authority.participant_id
        if new.client_order_id is not None:
            known = store.order_by_client_id(participant, new.client_order_id)
            if known is not None:
                raise OrderRefused(
                    409,
                    "duplicate_client_order_id",
                    f"client order id {new.client_order_id!r} is order {known.order_id}",
                )
        reservation = order_reservation(new.side, new.quantity_wh, new.price, False, market.fees)
        order = self._record(authority, new, reservation, now)
        submission = store.draft_submission(
            self._submitted(order, now), self._command(order, market, now)
        )
        claim = ThresholdClaim(
            open_wh=new.quantity_wh,
            open_value=open_value(new.side, new.quantity_wh, new.price),
            max_open_wh=authority.max_open_wh,
            max_value=authority.max_ecoin,
        )
        # as ensure_market decides it: by the schedule
        gate_closure = self._schedule.window(new.market_id).gate_closure
        return _Draft(order, submission, reservation, claim, gate_closure)

    def _place_drafted(
        self,
        store: OrderbookStore,
        authority: Authority,
        draft: _Draft | OrderRefused,
        taken: set[tuple[str, str]] | None = None,
    ) -> OrderRecord:
        """Reserve and record a drafted order. ``taken``: the client order ids of the orders
        placed so far in this unit of work; a second order with one of them is refused (the
        drafts, made before any was placed, could not see each other)."""
        if isinstance(draft, OrderRefused):
            raise draft
        order, reservation = draft.order, draft.reservation
        if self._clock() >= draft.gate_closure:
            # Gate closure passed between the draft and this transaction: refused here, not
            # accepted only for the book to expire it.
            raise OrderRefused(
                409,
                "market_closed",
                f"market {order.market_id} closed at gate closure "
                f"{format_timestamp(draft.gate_closure)}",
            )
        key = (order.participant_id, order.client_order_id or "")
        if taken is not None and order.client_order_id is not None and key in taken:
            raise _duplicate_id(order.client_order_id)
        self._reserve(store, authority, order.side, draft.claim, reservation)
        store.submit_drafted(order, draft.submission)
        if taken is not None and order.client_order_id is not None:
            taken.add(key)
        return order

    def _reserve(
        self,
        store: OrderbookStore,
        authority: Authority,
        side: str,
        claim: ThresholdClaim,
        reservation: Reservation,
    ) -> None:
        participant = authority.participant_id
        refusal = store.reserve_for_order(
            participant, authority.threshold_id, claim, reservation.energy_wh, reservation.ecoin
        )
        if refusal == "threshold_exhausted":
            raise OrderRefused(
                403,
                "threshold_exhausted",
                f"the threshold's open orders would exceed its {authority.max_open_wh} Wh "
                f"or {authority.max_ecoin} ecoin",
            )
        if refusal is not None:
            raise _no_cover(store, participant, side, reservation.energy_wh, reservation.ecoin)

    def _record(
        self, authority: Authority, new: NewOrder, reservation: Reservation, now: datetime
    ) -> OrderRecord:
        return OrderRecord(
            order_id=self._new_order_id(),
            client_order_id=new.client_order_id,
            participant_id=authority.participant_id,
            threshold_id=authority.threshold_id,
            market_id=new.market_id,
            side=new.side,
            price=new.price,
            quantity_wh=new.quantity_wh,
            time_in_force=new.time_in_force,
            status=OrderStatus.PENDING.value,
            remaining_wh=new.quantity_wh,
            reserved_wh=reservation.energy_wh,
            reserved_ecoin=reservation.ecoin,
            created_at=now,
            updated_at=now,
        )

    @staticmethod
    def _submitted(order: OrderRecord, now: datetime) -> OrderSubmitted:
        return OrderSubmitted(
            order_id=order.order_id,
            client_order_id=order.client_order_id,
            participant_id=order.participant_id,
            threshold_id=order.threshold_id,
            market_id=order.market_id,
            side=order.side,
            price=order.price,
            quantity_wh=order.quantity_wh,
            time_in_force=order.time_in_force,
            reserved_wh=order.reserved_wh,
            reserved_ecoin=order.reserved_ecoin,
            at=now,
        )

    @staticmethod
    def _command(
        order: OrderRecord, market: MarketRecord, now: datetime
    ) -> tuple[str, str, dict[str, Any]]:
        return (
            PLACE_ORDER,
            order.market_id,
            {
                "order_id": order.order_id,
                "client_order_id": order.client_order_id,
                "market_id": order.market_id,
                "participant_id": order.participant_id,
                "side": order.side,
                "price_per_kwh": format_price(order.price),
                "quantity_wh": order.quantity_wh,
                "time_in_force": order.time_in_force,
                "submitted_at": format_timestamp(now),
                **market_config(market),
            },
        )

    def _place(self, store: OrderbookStore, authority: Authority, new: NewOrder) -> OrderRecord:
        return self._place_drafted(store, authority, self._draft(store, authority, new))

    def order_for_change(
        self, store: OrderbookStore, participant_id: str, order_id: str
    ) -> OrderRecord:
        order = store.order(order_id)
        if order is None:
            raise OrderRefused(404, "unknown_order", f"no order {order_id}")
        if order.participant_id != participant_id:
            raise OrderRefused(403, "not_order_owner", "the order belongs to another participant")
        if order.status not in OPEN_STATUSES:
            raise OrderRefused(409, "order_not_open", f"the order is {order.status}")
        return order

    def cancel(self, participant_id: str, order_id: str) -> OrderRecord:
        with self._uow() as store:
            order = self.order_for_change(store, participant_id, order_id)
            store.publish(
                CANCEL_ORDER,
                order.market_id,
                {
                    "order_id": order_id,
                    "market_id": order.market_id,
                    "participant_id": participant_id,
                    "reason": REQUESTED,
                    "requested_at": format_timestamp(self._clock()),
                },
            )
            return order

    def reduce(self, participant_id: str, order_id: str, reduce_by_wh: int) -> OrderRecord:
        with self._uow() as store:
            order = self.order_for_change(store, participant_id, order_id)
            if reduce_by_wh >= order.remaining_wh:
                raise OrderRefused(
                    422,
                    "reduce_exceeds_remaining",
                    f"the order has {order.remaining_wh} Wh left; cancel it to withdraw it all",
                )
            store.publish(
                REDUCE_ORDER,
                order.market_id,
                {
                    "order_id": order_id,
                    "market_id": order.market_id,
                    "participant_id": participant_id,
                    "reduce_by_wh": reduce_by_wh,
                    "requested_at": format_timestamp(self._clock()),
                },
            )
            return order


def _duplicate(new: NewOrder) -> OrderRefused:
    return _duplicate_id(new.client_order_id)


def _duplicate_id(client_order_id: str | None) -> OrderRefused:
    return OrderRefused(
        409,
        "duplicate_client_order_id",
        f"client order id {client_order_id!r} is already in use",
    )


def _no_cover(
    store: OrderbookStore, participant_id: str, side: str, energy_wh: int, ecoin: int
) -> OrderRefused:
    account = store.account(participant_id)
    if side == SELL:
        free = account.free_wh if account else 0
        return OrderRefused(
            409,
            "insufficient_energy",
            f"the ask needs {energy_wh} Wh; {max(free, 0)} Wh are free "
            "(balance minus open asks and unsettled sales)",
        )
    assert side == BUY
    free = account.free_ecoin if account else 0
    return OrderRefused(
        409,
        "insufficient_ecoin",
        f"the bid needs {ecoin} ecoin (quantity x price + fees); {max(free, 0)} ecoin are free "
        "(balance minus open bids and unsettled purchases)",
    )
