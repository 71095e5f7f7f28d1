"""Participants: onboarding and life cycle (ops), and a participant's own record."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status

from prosum_auth import AccessClaims
from prosum_identity.domain.model import Limits
from prosum_identity.entrypoints.http.api import IdentityApi, participant_out
from prosum_identity.entrypoints.http.errors import IdentityRoute, documented
from prosum_identity.entrypoints.http.schemas import (
    Id,
    LimitsBody,
    LimitsChange,
    ParticipantOut,
    ParticipantPage,
    ParticipantRegistration,
    ReasonBody,
    RoleName,
)
from prosum_identity.entrypoints.http.security import acting_for, caller

TAG = "participants"
ParticipantId = Annotated[str, Path(description="the participant's id")]


def _limits(body: LimitsBody | None) -> Limits | None:
    if body is None:
        return None
    return Limits(body.max_order_wh, body.max_open_wh, body.max_ecoin)


def router(api: IdentityApi) -> APIRouter:
    routes = APIRouter(tags=[TAG], route_class=IdentityRoute, responses=documented(422))
    ops = Depends(caller(api.verifier, "ops"))
    ops_or_owner = Depends(caller(api.verifier, "ops", "participant"))

    @routes.post(
        "/participants",
        status_code=status.HTTP_201_CREATED,
        summary="Register a participant",
        description="Registers a producer, consumer, prosumer or the operator for one metering "
        "point, and asks the ledger adapter to grant its chain permissions (connect, send, "
        "receive; energy.issue for producers and prosumers). It is `pending` until the grant "
        "is confirmed, then `active`. Emits `identity.participant_registered` and "
        "`ledger.grant_permissions`. 200 instead of 201: this exact registration existed.",
        responses={
            200: {"model": ParticipantOut, "description": "registered before, same data"},
            **documented(401, 403, 409, 422),
        },
    )
    def register(
        body: ParticipantRegistration, response: Response, claims: AccessClaims = ops
    ) -> ParticipantOut:
        registered = api.participants.register(
            body.name,
            body.role,
            body.metering_point,
            _limits(body.limits),
            claims.subject,
            participant_id=body.participant_id,
        )
        if not registered.created:
            response.status_code = status.HTTP_200_OK
        response.headers["Location"] = f"participants/{registered.participant_id}"
        return api.participant_out(registered.participant_id)

    @routes.get(
        "/participants",
        summary="List participants",
        description="In participant id order, a page at a time (`after` = the last id seen).",
        responses=documented(401, 403, 422),
    )
    def list_participants(
        _claims: AccessClaims = ops,
        status_: Annotated[
            str | None,
            Query(alias="status", pattern="^(pending|active|grant_failed|suspended|closed)$"),
        ] = None,
        role: RoleName | None = None,
        after: Id | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> ParticipantPage:
        rows = api.queries.participants(status=status_, role=role, after=after, limit=limit + 1)
        items = [participant_out(r, api.policy) for r in rows[:limit]]
        more = len(rows) > limit
        return ParticipantPage(items=items, next_after=items[-1].participant_id if more else None)

    @routes.get(
        "/participants/{participant_id}",
        summary="A participant",
        description="Ops, or the participant itself with a participant-scope token.",
        responses=documented(401, 403, 404),
    )
    def get_participant(
        participant_id: ParticipantId, claims: AccessClaims = ops_or_owner
    ) -> ParticipantOut:
        acting_for(claims, participant_id)
        return api.participant_out(participant_id)

    @routes.post(
        "/participants/{participant_id}/suspend",
        summary="Suspend a participant",
        description="Its thresholds are refused everywhere from now on and no new ones are "
        "issued; its chain permissions are revoked. Emits `identity.participant_suspended` and "
        "`ledger.revoke_permissions`.",
        responses=documented(401, 403, 404, 409, 422),
    )
    def suspend(
        participant_id: ParticipantId, body: ReasonBody, claims: AccessClaims = ops
    ) -> ParticipantOut:
        api.participants.suspend(participant_id, body.reason, claims.subject)
        return api.participant_out(participant_id)

    @routes.post(
        "/participants/{participant_id}/reinstate",
        summary="Reinstate a suspended participant",
        description="Asks for its chain permissions again; it is `pending` until the grant "
        "is confirmed, then `active` (`identity.participant_reinstated`).",
        responses=documented(401, 403, 404, 409, 422),
    )
    def reinstate(
        participant_id: ParticipantId, body: ReasonBody, claims: AccessClaims = ops
    ) -> ParticipantOut:
        api.participants.reinstate(participant_id, body.reason, claims.subject)
        return api.participant_out(participant_id)

    @routes.post(
        "/participants/{participant_id}/close",
        summary="Close a participant for good",
        description="Revokes its chain permissions and every device it has, and frees its "
        "metering point. Emits `identity.participant_closed` (and `identity.device_revoked` per "
        "device).",
        responses=documented(401, 403, 404, 409, 422),
    )
    def close(
        participant_id: ParticipantId, body: ReasonBody, claims: AccessClaims = ops
    ) -> ParticipantOut:
        api.participants.close(participant_id, body.reason, claims.subject)
        return api.participant_out(participant_id)

    @routes.post(
        "/participants/{participant_id}/grant",
        summary="Retry the chain grant after it failed",
        description="Only for a participant in `grant_failed`: sends a new "
        "`ledger.grant_permissions`.",
        responses=documented(401, 403, 404, 409),
    )
    def retry_grant(participant_id: ParticipantId, claims: AccessClaims = ops) -> ParticipantOut:
        api.participants.retry_grant(participant_id, claims.subject)
        return api.participant_out(participant_id)

    @routes.put(
        "/participants/{participant_id}/limits",
        summary="Set a participant's threshold limits",
        description="Applies to thresholds issued from now on. `null` restores the defaults.",
        responses=documented(401, 403, 404, 409, 422),
    )
    def set_limits(
        participant_id: ParticipantId, body: LimitsChange, claims: AccessClaims = ops
    ) -> ParticipantOut:
        api.participants.set_limits(participant_id, _limits(body.limits), claims.subject)
        return api.participant_out(participant_id)

    return routes
