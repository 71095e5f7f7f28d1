"""Ops administration: OAuth clients for partners, ops tools and participants' apps; the
signing keys and their rotation."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Path, status

from prosum_auth import AccessClaims
from prosum_identity.entrypoints.http.api import IdentityApi, client_out
from prosum_identity.entrypoints.http.errors import IdentityRoute, documented
from prosum_identity.entrypoints.http.schemas import (
    ClientCreate,
    ClientOut,
    ClientSecretOut,
    ReasonBody,
    RotationOut,
    SigningKeyOut,
)
from prosum_identity.entrypoints.http.security import caller

log = logging.getLogger(__name__)

ClientId = Annotated[str, Path(description="the client's id")]


def router(api: IdentityApi) -> APIRouter:
    routes = APIRouter(route_class=IdentityRoute, responses=documented(422))
    ops = Depends(caller(api.verifier, "ops"))

    @routes.post(
        "/clients",
        tags=["clients"],
        status_code=status.HTTP_201_CREATED,
        summary="Create an OAuth client",
        description="For a partner system (`partner`), an ops tool (`ops`) or a participant's "
        "app (`participant`, with its `participant_id`). The secret is in this answer only.",
        responses=documented(401, 403, 404, 409, 422),
    )
    def create_client(body: ClientCreate, claims: AccessClaims = ops) -> ClientSecretOut:
        made = api.clients.create(
            body.name, frozenset(body.scopes), body.participant_id, claims.subject
        )
        return ClientSecretOut(client_id=made.client_id, client_secret=made.client_secret)

    @routes.get(
        "/clients", tags=["clients"], summary="OAuth clients", responses=documented(401, 403)
    )
    def list_clients(_claims: AccessClaims = ops) -> list[ClientOut]:
        return [client_out(row) for row in api.queries.clients()]

    @routes.get(
        "/clients/{client_id}",
        tags=["clients"],
        summary="An OAuth client",
        responses=documented(401, 403, 404),
    )
    def get_client(client_id: ClientId, _claims: AccessClaims = ops) -> ClientOut:
        return api.client_out(client_id)

    @routes.post(
        "/clients/{client_id}/secret",
        tags=["clients"],
        summary="Give a client a new secret",
        description="The old secret stops working at once; tokens already issued run out.",
        responses=documented(401, 403, 404, 409),
    )
    def rotate_secret(client_id: ClientId, claims: AccessClaims = ops) -> ClientSecretOut:
        made = api.clients.rotate_secret(client_id, claims.subject)
        return ClientSecretOut(client_id=made.client_id, client_secret=made.client_secret)

    @routes.post(
        "/clients/{client_id}/disable",
        tags=["clients"],
        summary="Disable a client",
        responses=documented(401, 403, 404, 409, 422),
    )
    def disable(client_id: ClientId, body: ReasonBody, claims: AccessClaims = ops) -> ClientOut:
        api.clients.disable(client_id, body.reason, claims.subject)
        return api.client_out(client_id)

    def _keys() -> list[SigningKeyOut]:
        return [
            SigningKeyOut(
                kid=k.kid,
                status=k.status,
                public_key=k.public_key,
                created_at=k.created_at,
                activates_at=k.activates_at,
                remove_after=k.remove_after,
            )
            for k in api.keys.listing()
        ]

    @routes.get(
        "/signing-keys",
        tags=["signing keys"],
        summary="Identity's signing keys and their state",
        responses=documented(401, 403),
    )
    def signing_keys(_claims: AccessClaims = ops) -> list[SigningKeyOut]:
        return _keys()

    @routes.post(
        "/signing-keys/rotate",
        tags=["signing keys"],
        status_code=status.HTTP_201_CREATED,
        summary="Rotate the token-signing key",
        description="A new key is published at once and signs after "
        "PROSUM_IDENTITY_KEY_PUBLISH_LEAD_S; the current key is retired then and stays "
        "published until every token it signed has expired, after which it is removed and "
        "its private half destroyed. Each change emits `identity.signing_keys_changed`.",
        responses=documented(401, 403),
    )
    def rotate(claims: AccessClaims = ops) -> RotationOut:
        kid = api.keys.rotate()
        log.warning("identity: %s rotated the signing key; %s is next", claims.subject, kid)
        return RotationOut(kid=kid, keys=_keys())

    return routes
