"""Who is calling: access tokens issued by identity itself, checked with its own key ring (no
round trip through Kafka), and declared in OpenAPI as the OAuth2 client-credentials flow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.security import OAuth2

from prosum_auth import AccessClaims, AuthError, TokenVerifier
from prosum_auth.http import bearer, http_error
from prosum_identity.domain.errors import not_found

oauth2 = OAuth2(
    flows=OAuthFlows(
        clientCredentials=OAuthFlowClientCredentials(
            tokenUrl="oauth/token",
            scopes={
                "ops": "operations: onboarding, devices, keys, clients",
                "partner": "partner systems (retailers, aggregators, charging operators)",
                "participant": "a participant's own app: its own records",
            },
        )
    ),
    scheme_name="client_credentials",
    description="OAuth2 client credentials at POST /oauth/token",
    auto_error=False,
)


def caller(verifier: TokenVerifier, *scopes: str) -> Callable[..., AccessClaims]:
    """A dependency: the verified claims of a bearer token holding one of ``scopes``."""

    def dependency(authorization: Annotated[str | None, Depends(oauth2)]) -> AccessClaims:
        try:
            return verifier.access(bearer(authorization), *scopes)
        except AuthError as error:
            raise http_error(error) from None

    return dependency


def acting_for(claims: AccessClaims, participant_id: str | None = None) -> str | None:
    """None for ops (anything goes); for a participant's token, the participant it may act
    for. Asking about another participant looks like asking about nobody (404)."""
    if "ops" in claims.scopes:
        return None
    own = claims.participant_id
    if own is None or (participant_id is not None and participant_id != own):
        raise not_found("participant_unknown", f"no participant {participant_id!r}")
    return own
