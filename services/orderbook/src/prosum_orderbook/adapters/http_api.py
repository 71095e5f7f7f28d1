"""The orderbook's HTTP API (FastAPI): orders in, book and trades out.

It is a driving adapter wired by ``bootstrap`` (the platform takes a service's routers from its
``build``, and the layer rules keep ``bootstrap`` from importing ``entrypoints``).

- Orders need a threshold (``X-Prosum-Threshold``): signature, expiry, revocation, an active
  participant, the action (``bid`` for buy orders, ``ask`` for sell orders) and the per-order
  limits are checked by ``prosum_auth``; cumulative limits and cover by order entry.
- Reads need an access token (``Authorization: Bearer``) with scope ``ops``, ``partner`` or
  ``participant``; a participant sees only its own orders, trades and cover.
- The public trade tape needs nothing: it names no participant.

Every refusal is a 4xx with ``{"detail": {"reason": ..., "message": ...}}``, request validation
included (reason ``invalid_request``).

No ``from __future__ import annotations`` here: FastAPI must see the dependency aliases made
inside ``build_router`` as objects, not as names it cannot resolve.
"""

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

import anyio.to_thread
import orjson
from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from prosum_auth import AccessClaims, AuthError, TokenVerifier
from prosum_auth.http import THRESHOLD_HEADER, http_error, require_scope
from prosum_orderbook.adapters.credentials import ThresholdChecks
from prosum_orderbook.adapters.group_commit import GroupCommit
from prosum_orderbook.adapters.queries import ReadModels, order_view
from prosum_orderbook.application.entry import Authority, NewOrder, OrderEntry, OrderRefused
from prosum_orderbook.domain.cover import open_value
from prosum_orderbook.domain.markets import Mechanism
from prosum_orderbook.domain.orders import BUY
from prosum_orderbook.domain.units import MAX_QUANTITY_WH, PriceError, parse_price

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
MARKET_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}Z$"

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid credential: `{detail: {reason, message}}`"},
    403: {"description": "the credential does not allow this: `{detail: {reason, message}}`"},
    404: {"description": "unknown market or order"},
    409: {"description": "the market's or the account's state refuses it (closed, no cover...)"},
    422: {"description": "malformed or out of range: reason `invalid_request`, `invalid_price`..."},
}


class ReasonedRoute(APIRoute):
    """Answers request validation errors in the API's error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                errors = exc.errors()
                first = errors[0] if errors else {}
                where = ".".join(str(p) for p in first.get("loc", ()))
                return JSONResponse(
                    status_code=422,
                    content={
                        "detail": {
                            "reason": "invalid_request",
                            "message": f"{where}: {first.get('msg', 'invalid')}",
                            "errors": [
                                {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg")}
                                for e in errors
                            ],
                        }
                    },
                )

        return route


def json_response(body: Any, status: int = 200) -> Response:
    """A response serialised once with orjson (the body already has its documented shape)."""
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def refused(error: OrderRefused) -> HTTPException:
    return HTTPException(error.status, detail={"reason": error.reason, "message": error.message})


class PlaceOrderBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    market_id: str = Field(
        pattern=MARKET_PATTERN,
        description="the delivery interval's start in UTC, e.g. 2026-11-21T14:00Z",
    )
    side: Literal["buy", "sell"] = Field(description="buy = bid (needs `bid`), sell = ask (`ask`)")
    quantity_wh: int = Field(ge=1, le=MAX_QUANTITY_WH, description="whole Wh")
    price_per_kwh: StrictStr | StrictInt = Field(
        description="limit price in ecoin per kWh as an exact decimal string (tick 0.001), "
        'e.g. "0.245" or "240"; JSON floats are refused',
        examples=["240", "0.245"],
    )
    time_in_force: Literal["gtc", "ioc"] = Field(
        default="gtc", description="gtc: good till gate closure; ioc: immediate or cancel"
    )
    client_order_id: str | None = Field(
        default=None, max_length=128, pattern=ID_PATTERN, description="unique per participant"
    )


class BatchItem(PlaceOrderBody):
    threshold: str | None = Field(
        default=None,
        description="this order's threshold; without it the request's X-Prosum-Threshold",
    )


class BatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    orders: list[BatchItem] = Field(min_length=1, max_length=500)


class ReduceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reduce_by_wh: int = Field(ge=1, le=MAX_QUANTITY_WH)


class OpenMarketBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    market_id: str = Field(pattern=MARKET_PATTERN)
    mechanism: Mechanism


class OrderView(BaseModel):
    order_id: str
    client_order_id: str | None
    participant_id: str
    market_id: str
    side: str
    price_per_kwh: str
    quantity_wh: int
    time_in_force: str
    status: str = Field(
        description="pending, open, partially_filled, filled, cancelled, expired, rejected"
    )
    remaining_wh: int
    filled_wh: int
    cancelled_wh: int
    expired_wh: int
    reserved_wh: int
    reserved_ecoin: int
    reason: str | None
    created_at: str | None
    updated_at: str | None


class Accepted(BaseModel):
    order: OrderView
    request: str = Field(description="what was sent to the market's book: place, cancel, reduce")


class Refusal(BaseModel):
    reason: str
    message: str


class BatchOutcome(BaseModel):
    status: int = Field(description="202 when placed, else the 4xx a single order would get")
    order: OrderView | None = None
    detail: Refusal | None = None


class BatchResult(BaseModel):
    accepted: int
    refused: int
    results: list[BatchOutcome]


class TradeView(BaseModel):
    trade_id: str
    market_id: str
    seller: str
    buyer: str
    sell_order_id: str
    buy_order_id: str
    quantity_wh: int
    price_per_kwh: str
    value_ecoin: int
    fee_ecoin: int
    mechanism: str
    executed_at: str | None
    status: str = Field(description="executed (awaiting settlement), settled or failed")
    tx_id: str | None
    block: int | None
    failure_reason: str | None


class TapeEntry(BaseModel):
    market_id: str
    delivery_start: str
    delivery_end: str
    sequence: int
    quantity_wh: int
    price_per_kwh: str
    mechanism: str
    executed_at: str | None


class Level(BaseModel):
    price_per_kwh: str
    quantity_wh: int
    orders: int


class Depth(BaseModel):
    market_id: str
    bids: list[Level]
    asks: list[Level]


class MarketView(BaseModel):
    market_id: str
    delivery_start: str | None
    delivery_end: str | None
    opens_at: str | None
    gate_closure: str | None
    mechanism: str
    operator_fee_ecoin: int
    grid_fee_per_kwh: str
    status: str
    closed_at: str | None
    trades: int
    traded_wh: int
    last_price_per_kwh: str | None


class Cover(BaseModel):
    participant_id: str
    block: int | None
    energy_wh: int
    ecoin: int
    reserved_wh: int
    reserved_ecoin: int
    free_wh: int
    free_ecoin: int


class BalanceDifference(BaseModel):
    participant_id: str
    projected_energy_wh: int
    projected_ecoin: int
    chain_energy_wh: int
    chain_ecoin: int


class ReconciliationView(BaseModel):
    run_id: str
    block: int
    checked: int
    skipped: int = Field(description="held balances from a later block than the report")
    differences: list[BalanceDifference]
    completed_at: str


def build_router(
    entry: OrderEntry,
    group: GroupCommit,
    reads: ReadModels,
    verifier: TokenVerifier,
    checks: ThresholdChecks,
) -> APIRouter:
    router = APIRouter(route_class=ReasonedRoute, responses=ERROR_RESPONSES)
    reader = Annotated[
        AccessClaims, Depends(require_scope(verifier, "ops", "partner", "participant"))
    ]
    operator = Annotated[AccessClaims, Depends(require_scope(verifier, "ops"))]
    threshold_header = Annotated[
        str | None, Header(alias=THRESHOLD_HEADER, description="the device's threshold")
    ]

    def own(claims: AccessClaims, participant_id: str) -> None:
        if claims.scopes & {"ops", "partner"}:
            return
        if claims.participant_id != participant_id:
            raise HTTPException(
                403,
                detail={"reason": "not_your_data", "message": "participants see only their own"},
            )

    def authority(
        token: str | None,
        side: str,
        quantity_wh: int | None,
        value: int | None,
        *,
        with_trust: bool = True,
    ) -> Authority:
        try:
            threshold = checks.check(
                token,
                "bid" if side == BUY else "ask",
                order_wh=quantity_wh,
                ecoin=value,
                with_trust=with_trust,
            )
        except AuthError as error:
            raise http_error(error) from None
        return Authority(
            participant_id=threshold.participant_id,
            threshold_id=threshold.threshold_id,
            device_id=threshold.device_id,
            max_open_wh=threshold.limits.max_open_wh,
            max_ecoin=threshold.limits.max_ecoin,
        )

    def admit(body: PlaceOrderBody, token: str | None) -> tuple[Authority, NewOrder]:
        """The order as entry takes it, with the authority its threshold grants; raises the
        HTTPException a refusal answers with. Revocations and the participant's status are
        checked by entry, in the transaction that accepts the order."""
        try:
            price = parse_price(str(body.price_per_kwh))
        except PriceError as exc:
            raise HTTPException(
                422, detail={"reason": "invalid_price", "message": str(exc)}
            ) from None
        value = open_value(body.side, body.quantity_wh, price) if body.side == BUY else None
        grant = authority(token, body.side, body.quantity_wh, value, with_trust=False)
        return grant, NewOrder(
            market_id=body.market_id,
            side=body.side,
            price=price,
            quantity_wh=body.quantity_wh,
            time_in_force=body.time_in_force,
            client_order_id=body.client_order_id,
        )

    @router.post(
        "/orders",
        status_code=202,
        response_model=Accepted,
        tags=["orders"],
        summary="Place a limit bid or ask (the paper's register_bid / register_ask)",
        description="Checks the threshold, the market, the threshold's open limits and the "
        "participant's cover, reserves the cover and sends the order to its market's book, "
        "which matches it within moments. Follow it with `GET /orders/{order_id}`.",
    )
    async def place_order(body: PlaceOrderBody, threshold: threshold_header = None) -> Response:
        # A threshold seen before needs no I/O to admit; a new one is verified in a thread.
        if checks.verified(threshold):
            request = admit(body, threshold)
        else:
            request = await anyio.to_thread.run_sync(admit, body, threshold)
        [outcome] = await group.place([request])
        if isinstance(outcome, OrderRefused):
            raise refused(outcome)
        return json_response({"order": order_view(outcome), "request": "place"}, 202)

    @router.post(
        "/orders/batch",
        response_model=BatchResult,
        tags=["orders"],
        summary="Place up to 500 orders in one request (aggregators, gateways of many devices)",
        description="Each order is checked, accepted or refused on its own, exactly as "
        "`POST /orders` would; `results` follows the order of `orders`. A malformed request "
        "is refused as a whole.",
    )
    async def place_batch(body: BatchBody, threshold: threshold_header = None) -> Response:
        def admit_all() -> list[tuple[Authority, NewOrder] | HTTPException]:
            admitted: list[tuple[Authority, NewOrder] | HTTPException] = []
            for item in body.orders:
                try:
                    admitted.append(admit(item, item.threshold or threshold))
                except HTTPException as exc:
                    admitted.append(exc)
            return admitted

        tokens = {item.threshold or threshold for item in body.orders}
        if all(checks.verified(token) for token in tokens):
            admitted = admit_all()
        else:
            admitted = await anyio.to_thread.run_sync(admit_all)
        requests = [a for a in admitted if not isinstance(a, HTTPException)]
        placed = iter(await group.place(requests) if requests else [])
        results: list[dict[str, Any]] = []
        for item in admitted:
            outcome: Any = item if isinstance(item, HTTPException) else next(placed)
            if isinstance(outcome, OrderRefused):
                outcome = refused(outcome)
            if isinstance(outcome, HTTPException):
                results.append({"status": outcome.status_code, "detail": outcome.detail})
            else:
                results.append({"status": 202, "order": order_view(outcome)})
        accepted = sum(1 for r in results if r["status"] == 202)
        return json_response(
            {"accepted": accepted, "refused": len(results) - accepted, "results": results}
        )

    def changeable(order_id: str, token: str | None) -> Authority:
        order = reads.order(order_id)
        if order is None:
            raise HTTPException(
                404, detail={"reason": "unknown_order", "message": f"no order {order_id}"}
            )
        return authority(token, order.side, None, None)

    @router.delete(
        "/orders/{order_id}",
        status_code=202,
        response_model=Accepted,
        tags=["orders"],
        summary="Cancel an open order; its reservation is released when the book cancels it",
    )
    def cancel_order(order_id: str, threshold: threshold_header = None) -> dict[str, Any]:
        grant = changeable(order_id, threshold)
        try:
            order = entry.cancel(grant.participant_id, order_id)
        except OrderRefused as error:
            raise refused(error) from None
        return {"order": order_view(order), "request": "cancel"}

    @router.post(
        "/orders/{order_id}/reduce",
        status_code=202,
        response_model=Accepted,
        tags=["orders"],
        summary="Reduce an open order's quantity; it keeps its time priority",
    )
    def reduce_order(
        order_id: str, body: ReduceBody, threshold: threshold_header = None
    ) -> dict[str, Any]:
        grant = changeable(order_id, threshold)
        try:
            order = entry.reduce(grant.participant_id, order_id, body.reduce_by_wh)
        except OrderRefused as error:
            raise refused(error) from None
        return {"order": order_view(order), "request": "reduce"}

    @router.get(
        "/orders/{order_id}", response_model=OrderView, tags=["orders"], summary="One order"
    )
    async def get_order(order_id: str, claims: reader) -> dict[str, Any]:
        order = await anyio.to_thread.run_sync(reads.order, order_id)
        if order is None:
            raise HTTPException(
                404, detail={"reason": "unknown_order", "message": f"no order {order_id}"}
            )
        own(claims, order.participant_id)
        return order_view(order)

    @router.get(
        "/participants/{participant_id}/orders",
        response_model=list[OrderView],
        tags=["orders"],
        summary="A participant's orders, newest first",
    )
    async def participant_orders(
        participant_id: str,
        claims: reader,
        status: str | None = None,
        market_id: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        own(claims, participant_id)
        return await anyio.to_thread.run_sync(
            reads.orders_of, participant_id, status, market_id, limit
        )

    @router.get(
        "/participants/{participant_id}/trades",
        response_model=list[TradeView],
        tags=["trades"],
        summary="A participant's trades as seller or buyer, newest first",
    )
    async def participant_trades(
        participant_id: str,
        claims: reader,
        status: Literal["executed", "settled", "failed"] | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        own(claims, participant_id)
        return await anyio.to_thread.run_sync(
            lambda: reads.trades(status=status, party=participant_id, limit=limit)
        )

    @router.get(
        "/participants/{participant_id}/cover",
        response_model=Cover,
        tags=["orders"],
        summary="Balances as last reported by the ledger, what is reserved, and what is free",
    )
    async def participant_cover(participant_id: str, claims: reader) -> dict[str, Any]:
        own(claims, participant_id)
        return await anyio.to_thread.run_sync(reads.cover, participant_id)

    @router.get(
        "/trades",
        response_model=list[TradeView],
        tags=["trades"],
        summary="Trades by status, seller and buyer (the paper's exchange_list)",
        description="A participant token must name itself as seller or buyer.",
    )
    async def trade_list(
        claims: reader,
        status: Literal["executed", "settled", "failed"] | None = None,
        seller: str | None = None,
        buyer: str | None = None,
        market_id: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        if not claims.scopes & {"ops", "partner"} and claims.participant_id not in (seller, buyer):
            raise HTTPException(
                403,
                detail={
                    "reason": "not_your_data",
                    "message": "a participant lists its own trades: set seller or buyer to itself",
                },
            )
        return await anyio.to_thread.run_sync(
            lambda: reads.trades(
                status=status, seller=seller, buyer=buyer, market_id=market_id, limit=limit
            )
        )

    @router.get(
        "/public/trades",
        response_model=list[TapeEntry],
        tags=["public"],
        summary="The public trade tape: interval, quantity, price, time; no participants",
    )
    async def tape(
        market_id: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[dict[str, Any]]:
        return await anyio.to_thread.run_sync(reads.tape, market_id, limit)

    @router.get("/markets", response_model=list[MarketView], tags=["markets"], summary="Markets")
    async def market_list(
        claims: reader,
        status: Literal["scheduled", "open", "closed"] | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[dict[str, Any]]:
        return await anyio.to_thread.run_sync(reads.markets, status, limit)

    @router.post(
        "/markets",
        status_code=201,
        response_model=MarketView,
        tags=["markets"],
        summary="Ops: choose a market's mechanism before it opens",
        description="Before the market opens its record is kept as `scheduled` and it opens "
        "with this mechanism; a market open by the schedule that nobody opened yet opens now. A "
        "market keeps the mechanism it opened with (409 `market_already_open`).",
    )
    def open_market(body: OpenMarketBody, claims: operator) -> dict[str, Any]:
        try:
            entry.choose_mechanism(body.market_id, body.mechanism)
        except OrderRefused as error:
            raise refused(error) from None
        market = reads.market(body.market_id)
        assert market is not None
        return market

    @router.get(
        "/reconciliations",
        response_model=list[ReconciliationView],
        tags=["ops"],
        summary="Ops: the order book's balances compared with the chain, newest first",
        description="Each run of settlement's reconciliation job makes the ledger report the "
        "chain's balances; the order book compares them with the balances its cover checks "
        "use and keeps the result here (and publishes `orderbook.reconciliation_completed`).",
    )
    async def reconciliation_runs(
        claims: operator, limit: Annotated[int, Query(ge=1, le=100)] = 10
    ) -> list[dict[str, Any]]:
        return await anyio.to_thread.run_sync(reads.reconciliations, limit)

    @router.get(
        "/markets/{market_id}", response_model=MarketView, tags=["markets"], summary="A market"
    )
    async def market(market_id: str, claims: reader) -> dict[str, Any]:
        found = await anyio.to_thread.run_sync(reads.market, market_id)
        if found is None:
            raise HTTPException(
                404, detail={"reason": "unknown_market", "message": f"no market {market_id}"}
            )
        return found

    @router.get(
        "/markets/{market_id}/depth",
        response_model=Depth,
        tags=["markets"],
        summary="Order book depth: quantity and order count per price level, best first",
    )
    async def depth(
        claims: reader,
        market_id: Annotated[str, Path(pattern=MARKET_PATTERN)],
        levels: Annotated[int, Query(ge=1, le=500)] = 20,
    ) -> dict[str, Any]:
        return await anyio.to_thread.run_sync(reads.depth, market_id, levels)

    return router
