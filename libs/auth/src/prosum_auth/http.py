"""FastAPI dependencies that check access tokens and thresholds with a TokenVerifier.

Tokens come as ``Authorization: Bearer <access token>``; a threshold as
``X-Prosum-Threshold: <threshold>``. A refusal answers 401 or 403 with
``{"detail": {"reason": ..., "message": ...}}``.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Header, HTTPException

from prosum_auth.tokens import AccessClaims, AuthError, TokenVerifier

THRESHOLD_HEADER = "X-Prosum-Threshold"


def http_error(error: AuthError) -> HTTPException:
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return HTTPException(
        error.status, detail={"reason": error.reason, "message": error.detail}, headers=headers
    )


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def require_scope(verifier: TokenVerifier, *scopes: str) -> Callable[..., AccessClaims]:
    def dependency(authorization: str | None = Header(default=None)) -> AccessClaims:
        try:
            return verifier.access(bearer(authorization), *scopes)
        except AuthError as error:
            raise http_error(error) from None

    return dependency
