"""Settlement's HTTP API: instructions and batches for ops, top-ups and payouts as in the Oh et
al. paper (request_ecoin_issue, schedule_ecoin_issue, issue_ecoin), balances, reconciliation.

No ``from __future__ import annotations`` here: FastAPI must see the dependency aliases built
inside ``build_router`` as real objects, not as strings it cannot resolve.
"""

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from pydantic import BaseModel, Field

from prosum_auth import AccessClaims
from prosum_platform.domain import DomainRuleViolation
from prosum_platform.eventstore import retry_on_conflict
from prosum_platform.service import Platform
from prosum_settlement.adapters import queries
from prosum_settlement.adapters.store import unit_of_work
from prosum_settlement.application import services

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid access token"},
    403: {"description": "the token's scope or participant does not allow this"},
    404: {"description": "not found"},
    409: {"description": "the request conflicts with the current state"},
    422: {"description": "malformed body or out-of-range values"},
}


def problem(code: int, reason: str, message: str) -> HTTPException:
    return HTTPException(code, detail={"reason": reason, "message": message})


class FundsBody(BaseModel):
    amount: int = Field(gt=0, description="ecoin (unit 1)")
    reference: str = Field(min_length=1, max_length=256, description="the bank payment reference")
    participant_id: str | None = Field(
        default=None, max_length=128, description="ops only: on behalf of this participant"
    )


class Decision(BaseModel):
    reason: str = Field(default="", max_length=500)


class Paid(BaseModel):
    bank_reference: str = Field(min_length=1, max_length=256)


def build_router(
    platform: Platform,
    settings_max: int,
    access: Callable[..., AccessClaims],
    ops_only: Callable[..., AccessClaims],
    participant_status: Callable[[str], str | None],
) -> APIRouter:
    router = APIRouter()
    engine = platform.engine
    uow = unit_of_work(platform.store)
    Caller = Annotated[AccessClaims, Depends(access)]  # noqa: N806 - a type alias
    Ops = Annotated[AccessClaims, Depends(ops_only)]  # noqa: N806 - a type alias

    def own_or_ops(caller: AccessClaims, participant_id: str) -> None:
        if "ops" in caller.scopes or "partner" in caller.scopes:
            return
        if caller.participant_id != participant_id:
            raise problem(403, "not_your_account", "participants see only their own records")

    def scoped_participant(caller: AccessClaims) -> str | None:
        if "ops" in caller.scopes or "partner" in caller.scopes:
            return None
        return caller.participant_id or "-"

    @router.get(
        "/instructions",
        tags=["settlement"],
        summary="Settlement instructions (trades)",
        responses=ERRORS,
    )
    def list_instructions(
        caller: Caller,
        status_: Annotated[
            Literal["pending", "batched", "settled", "failed"] | None, Query(alias="status")
        ] = None,
        seller: str | None = None,
        buyer: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        return queries.list_instructions(
            engine,
            status=status_,
            seller=seller,
            buyer=buyer,
            participant=scoped_participant(caller),
            limit=limit,
        )

    @router.get(
        "/instructions/{trade_id}",
        tags=["settlement"],
        summary="One trade's settlement",
        responses=ERRORS,
    )
    def get_instruction(trade_id: str, caller: Caller) -> dict[str, Any]:
        found = queries.get_instruction(engine, trade_id)
        if found is None:
            raise problem(404, "unknown_trade", f"no settlement instruction for trade {trade_id}")
        if scoped_participant(caller) not in (None, found["seller"], found["buyer"]):
            raise problem(403, "not_your_account", "participants see only their own trades")
        return found

    @router.get(
        "/failures",
        tags=["operations"],
        summary="Trades that failed to settle (ops)",
        responses=ERRORS,
    )
    def failures(_: Ops, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        return queries.list_instructions(engine, status="failed", limit=limit)

    @router.get(
        "/batches",
        tags=["operations"],
        summary="Settlement batches sent to the chain (ops)",
        responses=ERRORS,
    )
    def list_batches(
        _: Ops,
        status_: Annotated[
            Literal["submitted", "confirmed", "failed"] | None, Query(alias="status")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        return queries.list_batches(engine, status_, limit)

    def request(
        kind: str, body: FundsBody, caller: AccessClaims, response: Response
    ) -> dict[str, Any]:
        if "ops" in caller.scopes and body.participant_id:
            participant = body.participant_id
        elif "participant" in caller.scopes and caller.participant_id:
            if body.participant_id not in (None, caller.participant_id):
                raise problem(403, "not_your_account", "a participant requests for itself only")
            participant = caller.participant_id
        else:
            raise problem(
                403,
                "insufficient_scope",
                "a participant token (or ops naming the participant) is needed",
            )
        if body.amount > settings_max:
            raise problem(422, "amount_out_of_range", f"at most {settings_max} ecoin per request")
        if participant_status(participant) != "active":
            raise problem(403, "participant_not_active", f"participant {participant} is not active")

        def run() -> tuple[Any, bool]:
            with uow() as store:
                return services.request_funds(store, kind, participant, body.amount, body.reference)

        try:
            funds, created = retry_on_conflict(run)
        except DomainRuleViolation as exc:
            raise problem(409, exc.reason, exc.detail) from None
        response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        found = queries.get_funds(engine, kind, funds.id)
        assert found is not None
        return found

    def decide(
        kind: str, request_id: str, caller: AccessClaims, *, approve: bool, reason: str = ""
    ) -> dict[str, Any]:
        if queries.get_funds(engine, kind, request_id) is None:
            raise problem(404, f"unknown_{kind}", f"no {kind} {request_id}")

        def run() -> None:
            with uow() as store:
                services.decide_funds(
                    store, request_id, caller.subject, approve=approve, reason=reason
                )

        try:
            retry_on_conflict(run)
        except DomainRuleViolation as exc:
            raise problem(409, exc.reason, exc.detail) from None
        found = queries.get_funds(engine, kind, request_id)
        assert found is not None
        return found

    for kind, label in (("topup", "top-up"), ("payout", "payout")):
        path = f"/{kind}s"

        def make(kind: str = kind, label: str = label, path: str = path) -> None:
            @router.post(
                path,
                status_code=201,
                tags=[f"{kind}s"],
                summary=f"Request an ecoin {label}",
                responses={**ERRORS, 200: {"description": "the same request was already made"}},
            )
            def create(body: FundsBody, caller: Caller, response: Response) -> dict[str, Any]:
                return request(kind, body, caller, response)

            @router.get(path, tags=[f"{kind}s"], summary=f"List {label}s", responses=ERRORS)
            def listing(
                caller: Caller,
                status_: Annotated[str | None, Query(alias="status", max_length=16)] = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100,
            ) -> list[dict[str, Any]]:
                return queries.list_funds(engine, kind, status_, scoped_participant(caller), limit)

            @router.get(
                path + "/{request_id}", tags=[f"{kind}s"], summary=f"One {label}", responses=ERRORS
            )
            def one(request_id: str, caller: Caller) -> dict[str, Any]:
                found = queries.get_funds(engine, kind, request_id)
                if found is None:
                    raise problem(404, f"unknown_{kind}", f"no {label} {request_id}")
                own_or_ops(caller, found["participant_id"])
                return found

            @router.post(
                path + "/{request_id}/approve",
                tags=[f"{kind}s"],
                summary=f"Approve a {label} (ops): the ledger is asked to {'mint' if kind == 'topup' else 'burn'} ecoin",
                responses=ERRORS,
            )
            def approve(request_id: str, caller: Ops) -> dict[str, Any]:
                return decide(kind, request_id, caller, approve=True)

            @router.post(
                path + "/{request_id}/reject",
                tags=[f"{kind}s"],
                summary=f"Reject a {label} (ops)",
                responses=ERRORS,
            )
            def reject(request_id: str, body: Decision, caller: Ops) -> dict[str, Any]:
                if not body.reason.strip():
                    raise problem(422, "reason_required", "say why the request is rejected")
                return decide(kind, request_id, caller, approve=False, reason=body.reason)

        make()

    @router.post(
        "/payouts/{request_id}/paid",
        tags=["payouts"],
        summary="Record that ops paid a burned payout to the bank account",
        responses=ERRORS,
    )
    def paid(request_id: str, body: Paid, caller: Ops) -> dict[str, Any]:
        if queries.get_funds(engine, "payout", request_id) is None:
            raise problem(404, "unknown_payout", f"no payout {request_id}")

        def run() -> None:
            with uow() as store:
                services.mark_paid(store, request_id, caller.subject, body.bank_reference)

        try:
            retry_on_conflict(run)
        except DomainRuleViolation as exc:
            raise problem(409, exc.reason, exc.detail) from None
        found = queries.get_funds(engine, "payout", request_id)
        assert found is not None
        return found

    @router.get(
        "/balances/{participant_id}",
        tags=["balances"],
        summary="A participant's balances as the chain last reported them",
        responses=ERRORS,
    )
    def balance(participant_id: str, caller: Caller) -> dict[str, Any]:
        own_or_ops(caller, participant_id)
        found = queries.get_balance(engine, participant_id)
        if found is None:
            raise problem(404, "unknown_participant", f"no balance known for {participant_id}")
        return found

    @router.post(
        "/reconciliations",
        status_code=202,
        tags=["operations"],
        summary="Compare projected balances with the chain (ops)",
        responses=ERRORS,
    )
    def reconcile(_: Ops) -> dict[str, Any]:
        with uow() as store:
            run_id = services.start_reconciliation(store)
        if run_id is None:
            raise problem(409, "nothing_to_reconcile", "no balances are known yet")
        return {"run_id": run_id, "status": "running"}

    @router.get(
        "/reconciliations",
        tags=["operations"],
        summary="Reconciliation runs (ops)",
        responses=ERRORS,
    )
    def reconciliations(
        _: Ops, limit: Annotated[int, Query(ge=1, le=100)] = 20
    ) -> list[dict[str, Any]]:
        return queries.list_reconciliations(engine, limit)

    @router.get(
        "/reconciliations/{run_id}",
        tags=["operations"],
        summary="One reconciliation run (ops)",
        responses=ERRORS,
    )
    def reconciliation(run_id: str, _: Ops) -> dict[str, Any]:
        found = queries.get_reconciliation(engine, run_id)
        if found is None:
            raise problem(404, "unknown_run", f"no reconciliation {run_id}")
        return found

    return router
