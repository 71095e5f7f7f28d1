"""prosum access tokens and thresholds, shared by identity (which signs) and the services that
verify them offline."""

from prosum_auth.tokens import (
    ACTIONS,
    SCOPES,
    AccessClaims,
    AuthError,
    KeySet,
    Limits,
    Threshold,
    TokenSigner,
    TokenVerifier,
    TrustView,
    jwk_of,
)

__all__ = [
    "ACTIONS",
    "SCOPES",
    "AccessClaims",
    "AuthError",
    "KeySet",
    "Limits",
    "Threshold",
    "TokenSigner",
    "TokenVerifier",
    "TrustView",
    "jwk_of",
]
