"""Devices (the identity of things): registration with key and DACT, and revocation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status

from prosum_auth import AccessClaims
from prosum_identity.application.devices import DeviceRegistration as Registration
from prosum_identity.entrypoints.http.api import IdentityApi, device_out
from prosum_identity.entrypoints.http.errors import IdentityRoute, documented
from prosum_identity.entrypoints.http.schemas import (
    DactBody,
    DeviceOut,
    DeviceRegistration,
    ReasonBody,
)
from prosum_identity.entrypoints.http.security import acting_for, caller

TAG = "devices"
DeviceId = Annotated[str, Path(description="the device's id (its IDoT)")]
ParticipantId = Annotated[str, Path(description="the participant's id")]


def router(api: IdentityApi) -> APIRouter:
    routes = APIRouter(tags=[TAG], route_class=IdentityRoute, responses=documented(422))
    ops = Depends(caller(api.verifier, "ops"))
    ops_or_owner = Depends(caller(api.verifier, "ops", "participant"))

    @routes.post(
        "/participants/{participant_id}/devices",
        status_code=status.HTTP_201_CREATED,
        summary="Register a device of a participant",
        description="A smart meter, home gateway, EV charger or battery with its Ed25519 "
        "public key and the metering point it measures (the participant's). Its DACT can be "
        "registered with it (`dact`) or later. Emits `identity.device_registered`. 200 instead "
        "of 201: this exact registration existed.",
        responses={
            200: {"model": DeviceOut, "description": "registered before, same data"},
            **documented(401, 403, 404, 409, 422),
        },
    )
    def register(
        participant_id: ParticipantId,
        body: DeviceRegistration,
        response: Response,
        claims: AccessClaims = ops,
    ) -> DeviceOut:
        created = api.devices.register(
            participant_id,
            Registration(
                device_id=body.device_id,
                kind=body.kind,
                public_key=body.public_key,
                metering_point=body.metering_point,
                rating_w=body.rating_w,
                dact=body.dact,
            ),
            claims.subject,
        )
        if not created:
            response.status_code = status.HTTP_200_OK
        response.headers["Location"] = f"devices/{body.device_id}"
        return api.device_out(body.device_id)

    @routes.get(
        "/participants/{participant_id}/devices",
        summary="A participant's devices",
        responses=documented(401, 403, 404),
    )
    def list_devices(
        participant_id: ParticipantId, claims: AccessClaims = ops_or_owner
    ) -> list[DeviceOut]:
        acting_for(claims, participant_id)
        api.participant_out(participant_id)  # 404 for an unknown participant
        return [device_out(row) for row in api.queries.devices_of(participant_id)]

    @routes.get("/devices/{device_id}", summary="A device", responses=documented(401, 403, 404))
    def get_device(device_id: DeviceId, claims: AccessClaims = ops_or_owner) -> DeviceOut:
        return api.device_out(device_id, acting_for(claims))

    @routes.put(
        "/devices/{device_id}/dact",
        summary="Register (or replace) a device's DACT",
        description="The DACT must describe this device exactly (id, participant, kind, "
        "metering point, key); identity keeps its SHA-256. Thresholds are then issued only to "
        "a device presenting this DACT. See `POST /thresholds` for the format.",
        responses=documented(401, 403, 404, 409, 422),
    )
    def register_dact(device_id: DeviceId, body: DactBody, claims: AccessClaims = ops) -> DeviceOut:
        api.devices.register_dact(device_id, body.dact, claims.subject)
        return api.device_out(device_id)

    @routes.post(
        "/devices/{device_id}/revoke",
        summary="Revoke a device",
        description="Its thresholds and signatures are refused everywhere from now on, before "
        "they expire. Ops, or the participant itself (a stolen device). Emits "
        "`identity.device_revoked`.",
        responses=documented(401, 403, 404, 409, 422),
    )
    def revoke(
        device_id: DeviceId, body: ReasonBody, claims: AccessClaims = ops_or_owner
    ) -> DeviceOut:
        owner = acting_for(claims)
        api.devices.revoke(device_id, body.reason, claims.subject, acting_for=owner)
        return api.device_out(device_id)

    return routes
