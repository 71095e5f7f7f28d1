"""The certification node over HTTP: challenges and thresholds for devices, and the threshold
records ops and participants read and revoke."""

from __future__ import annotations

import inspect
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from prosum_auth import AccessClaims
from prosum_identity.application.thresholds import ThresholdRequest
from prosum_identity.domain import dact as dact_format
from prosum_identity.entrypoints.http.api import IdentityApi, threshold_record
from prosum_identity.entrypoints.http.errors import IdentityRoute, documented
from prosum_identity.entrypoints.http.schemas import (
    ChallengeOut,
    LimitsOut,
    ReasonBody,
    ThresholdOut,
    ThresholdRecord,
    ThresholdRequestBody,
)
from prosum_identity.entrypoints.http.security import acting_for, caller

TAG = "thresholds"
DeviceId = Annotated[str, Path(description="the device's id (its IDoT)")]
ThresholdId = Annotated[str, Path(description="the threshold's id (its jti)")]
FORMAT = inspect.cleandoc(dact_format.__doc__ or "")


def router(api: IdentityApi) -> APIRouter:
    routes = APIRouter(tags=[TAG], route_class=IdentityRoute, responses=documented(422))
    ops_or_owner = Depends(caller(api.verifier, "ops", "participant"))

    @routes.post(
        "/devices/{device_id}/challenges",
        status_code=status.HTTP_201_CREATED,
        summary="A challenge for a device to sign",
        description="Called by the device itself (no access token: it proves itself with its "
        "key). The challenge is single-use and short-lived; a device gets a limited number "
        "per minute (429 with Retry-After beyond). The answer carries the exact message to "
        "sign for the DACT registered for it.",
        responses=documented(403, 404, 409, 429),
    )
    def challenge(device_id: DeviceId) -> ChallengeOut:
        issued = api.thresholds.challenge(device_id)
        return ChallengeOut(
            challenge_id=issued.challenge_id,
            device_id=issued.device_id,
            nonce=issued.nonce,
            issued_at=issued.issued_at,
            expires_at=issued.expires_at,
            message=issued.message,
        )

    @routes.post(
        "/thresholds",
        status_code=status.HTTP_201_CREATED,
        summary="Ask for a threshold with a signed challenge and the DACT",
        description="Identity matches the presented DACT against the registered one, checks "
        "the signature over the challenge with the device's key, and issues a threshold: a "
        "short-lived capability naming the participant, the device, the actions (the DACT's "
        "that the participant's role permits) and the limits. Other services verify it "
        "offline with identity's keys. Emits `identity.threshold_issued`.\n\n" + FORMAT,
        responses=documented(401, 403, 404, 409, 410, 422, 503),
    )
    def issue(body: ThresholdRequestBody) -> ThresholdOut:
        issued = api.thresholds.issue(
            ThresholdRequest(
                device_id=body.device_id,
                challenge_id=body.challenge_id,
                signature=body.signature,
                dact=body.dact,
                actions=tuple(body.actions) if body.actions is not None else None,
            )
        )
        return ThresholdOut(
            threshold=issued.threshold,
            threshold_id=issued.threshold_id,
            participant_id=issued.participant_id,
            device_id=issued.device_id,
            metering_point=issued.metering_point,
            actions=list(issued.actions),
            limits=LimitsOut(
                max_order_wh=issued.limits.max_order_wh,
                max_open_wh=issued.limits.max_open_wh,
                max_ecoin=issued.limits.max_ecoin,
            ),
            issued_at=issued.issued_at,
            expires_at=issued.expires_at,
            kid=issued.kid,
        )

    @routes.get(
        "/thresholds/{threshold_id}",
        summary="A threshold's record",
        description="What it grants and whether it is valid, expired or revoked (the token "
        "itself is never stored).",
        responses=documented(401, 403, 404),
    )
    def get_threshold(
        threshold_id: ThresholdId, claims: AccessClaims = ops_or_owner
    ) -> ThresholdRecord:
        return api.threshold_out(threshold_id, acting_for(claims))

    @routes.get(
        "/participants/{participant_id}/thresholds",
        summary="A participant's thresholds",
        description="Newest first; `valid=true` for the ones neither expired nor revoked.",
        responses=documented(401, 403, 404, 422),
    )
    def list_thresholds(
        participant_id: str,
        claims: AccessClaims = ops_or_owner,
        valid: bool = False,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[ThresholdRecord]:
        acting_for(claims, participant_id)
        now = api.clock()
        rows = api.queries.thresholds(
            participant_id=participant_id, valid_at=now if valid else None, limit=limit
        )
        return [threshold_record(row, now) for row in rows]

    @routes.post(
        "/thresholds/{threshold_id}/revoke",
        summary="Revoke a threshold before it expires",
        description="Every service refuses it from the moment it applies the event "
        "`identity.threshold_revoked`. Ops, or the participant itself.",
        responses=documented(401, 403, 404, 409, 422),
    )
    def revoke(
        threshold_id: ThresholdId, body: ReasonBody, claims: AccessClaims = ops_or_owner
    ) -> ThresholdRecord:
        owner = acting_for(claims)
        api.thresholds.revoke(threshold_id, body.reason, claims.subject, acting_for=owner)
        return api.threshold_out(threshold_id)

    return routes
