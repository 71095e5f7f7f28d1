"""``POST /oauth/token`` (RFC 6749 client credentials) and ``GET /.well-known/jwks.json``.

The token endpoint reads its form body itself (``application/x-www-form-urlencoded`` is a
query string in the body), so it needs no multipart library, and it answers errors in RFC 6749's
shape, ``{"error", "error_description"}``, not the API's ``detail`` shape.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from prosum_identity.application.clients import OAuthError
from prosum_identity.entrypoints.http.api import IdentityApi
from prosum_identity.entrypoints.http.errors import IdentityRoute
from prosum_identity.entrypoints.http.schemas import JwkSet, OAuthErrorResponse, TokenResponse

log = logging.getLogger(__name__)

FORM = "application/x-www-form-urlencoded"
MAX_BODY = 4096
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# Short, so a verifier using the JWKS (rather than identity's events) sees a new key before it
# signs (PROSUM_IDENTITY_KEY_PUBLISH_LEAD_S); on an unknown kid, fetch it again.
JWKS_CACHE = {"Cache-Control": "public, max-age=30"}

_TOKEN_FORM: dict[str, Any] = {
    "type": "object",
    "required": ["grant_type"],
    "properties": {
        "grant_type": {"type": "string", "enum": ["client_credentials"]},
        "client_id": {"type": "string", "description": "unless sent with HTTP Basic"},
        "client_secret": {"type": "string", "description": "unless sent with HTTP Basic"},
        "scope": {
            "type": "string",
            "description": "space-separated subset of the client's scopes; all when left out",
        },
    },
}


def _oauth_error(error: OAuthError, basic: bool) -> JSONResponse:
    headers = dict(NO_STORE)
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="prosum"' if basic else "Bearer"
    return JSONResponse(
        {"error": error.error, "error_description": error.description},
        status_code=error.status,
        headers=headers,
    )


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    """RFC 6749 2.3.1: ``Basic base64(urlencode(id) ":" urlencode(secret))``."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError("invalid_client", "the Basic credentials are not base64") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise OAuthError("invalid_client", "the Basic credentials have no ':'")
    return unquote_plus(client_id), unquote_plus(secret)


def _form(body: bytes) -> dict[str, str]:
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the body is not a URL-encoded form") from None
    repeated = sorted(name for name, values in parsed.items() if len(values) > 1)
    if repeated:
        raise OAuthError("invalid_request", f"parameters given more than once: {repeated}")
    return {name: values[0] for name, values in parsed.items()}


def router(api: IdentityApi) -> APIRouter:
    routes = APIRouter(tags=["oauth"], route_class=IdentityRoute)

    @routes.post(
        "/oauth/token",
        summary="An access token for a client (OAuth2 client credentials)",
        description="RFC 6749 section 4.4. Authenticate with `client_id` and `client_secret` "
        "in the form, or with HTTP Basic (not both). The token is a JWT signed with "
        "identity's current key (see the JWKS); its `scope` holds `ops`, `partner` or "
        "`participant`, and participant clients' tokens name their `participant_id`.",
        response_model=TokenResponse,
        responses={
            400: {"model": OAuthErrorResponse, "description": "RFC 6749 error"},
            401: {"model": OAuthErrorResponse, "description": "invalid_client"},
        },
        openapi_extra={
            "requestBody": {"required": True, "content": {FORM: {"schema": _TOKEN_FORM}}}
        },
    )
    async def token(request: Request) -> JSONResponse:
        basic = False
        try:
            content_type = request.headers.get("content-type", "").split(";")[0].strip()
            if content_type.lower() != FORM:
                raise OAuthError("invalid_request", f"the body must be {FORM}")
            body = await request.body()
            if len(body) > MAX_BODY:
                raise OAuthError("invalid_request", "the body is too large")
            form = _form(body)
            credentials = _basic_credentials(request.headers.get("authorization"))
            basic = credentials is not None
            if credentials is not None:
                if "client_secret" in form:
                    raise OAuthError(
                        "invalid_request", "use one client authentication method, not two"
                    )
                client_id, secret = credentials
            else:
                client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
            # scrypt takes tens of milliseconds: off the event loop.
            grant = await run_in_threadpool(
                api.clients.token, form.get("grant_type"), client_id, secret, form.get("scope")
            )
        except OAuthError as error:
            log.info("identity: token refused: %s", error.error)
            return _oauth_error(error, basic)
        return JSONResponse(
            TokenResponse(
                access_token=grant.access_token,
                token_type="Bearer",  # noqa: S106 - RFC 6750 token type
                expires_in=grant.expires_in,
                scope=grant.scope,
            ).model_dump(),
            headers=NO_STORE,
        )

    @routes.get(
        "/.well-known/jwks.json",
        summary="Identity's public signing keys (JWKS)",
        description="Every key a valid token can be signed with: the active one, one about to "
        "sign, and retired ones until every token they signed has expired. Verify offline; "
        "on an unknown `kid`, fetch this again.",
        response_model=JwkSet,
    )
    def jwks() -> JSONResponse:
        return JSONResponse({"keys": api.keys.jwks()}, headers=JWKS_CACHE)

    return routes
