"""OAuth2 client credentials (RFC 6749 section 4.4): clients prove their secret and get a
short-lived access token with their scopes.

The first ops client comes from configuration and is checked against it directly, so changing
the configured secret takes effect at the next start and nothing about it is stored. Every
other client is created by ops and stored with an scrypt hash of its secret; the secret is
shown once, when it is made.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from prosum_identity.application.keys import SigningKeys
from prosum_identity.application.policy import IdentityPolicy
from prosum_identity.application.ports import Clock, UnitOfWork
from prosum_identity.application.transactions import commit, retrying
from prosum_identity.domain.clients import (
    ApiClient,
    ClientStatus,
    hash_secret,
    spend_like_a_check,
    verify_secret,
)
from prosum_identity.domain.errors import conflict, not_found
from prosum_identity.domain.participant import Participant, ParticipantStatus

CLIENT_CREDENTIALS = "client_credentials"


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error: ``invalid_request``, ``invalid_client``,
    ``unauthorized_client``, ``unsupported_grant_type`` or ``invalid_scope``."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = 401 if error == "invalid_client" else 400


@dataclass(frozen=True, slots=True)
class BootstrapClient:
    client_id: str
    secret: str


@dataclass(frozen=True, slots=True)
class TokenGrant:
    access_token: str
    expires_in: int
    scope: str
    token_type: str = "Bearer"  # noqa: S105 - the RFC 6750 token type, not a secret


@dataclass(frozen=True, slots=True)
class ClientSecret:
    client_id: str
    client_secret: str


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


class Clients:
    def __init__(
        self,
        uow: UnitOfWork,
        clock: Clock,
        keys: SigningKeys,
        policy: IdentityPolicy,
        bootstrap: BootstrapClient,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._keys = keys
        self._policy = policy
        self._bootstrap = bootstrap

    # -- management (ops) --------------------------------------------------------------------
    def create(
        self, name: str, scopes: frozenset[str], participant_id: str | None, by: str
    ) -> ClientSecret:
        client_id = f"cl-{secrets.token_hex(10)}"
        secret = secrets.token_urlsafe(32)
        secret_hash = hash_secret(secret)

        def attempt() -> None:
            with self._uow() as store:
                if participant_id is not None:
                    participant = store.get(Participant, participant_id)
                    if participant is None:
                        raise not_found("participant_unknown", f"no participant {participant_id!r}")
                    if participant.status is ParticipantStatus.CLOSED:
                        raise conflict("participant_closed", f"{participant_id} is closed")
                client = ApiClient.register(
                    client_id, name, scopes, participant_id, secret_hash, self._clock(), by
                )
                commit(store, client)

        retrying(attempt)
        return ClientSecret(client_id, secret)

    def rotate_secret(self, client_id: str, by: str) -> ClientSecret:
        secret = secrets.token_urlsafe(32)
        secret_hash = hash_secret(secret)

        def attempt() -> None:
            with self._uow() as store:
                client = store.get(ApiClient, client_id)
                if client is None:
                    raise not_found("client_unknown", f"no client {client_id!r}")
                client.rotate_secret(secret_hash, self._clock(), by)
                commit(store, client)

        retrying(attempt)
        return ClientSecret(client_id, secret)

    def disable(self, client_id: str, reason: str, by: str) -> None:
        def attempt() -> None:
            with self._uow() as store:
                client = store.get(ApiClient, client_id)
                if client is None:
                    raise not_found("client_unknown", f"no client {client_id!r}")
                client.disable(reason, self._clock(), by)
                commit(store, client)

        retrying(attempt)

    # -- the token endpoint ------------------------------------------------------------------
    def token(
        self,
        grant_type: str | None,
        client_id: str | None,
        client_secret: str | None,
        scope: str | None,
    ) -> TokenGrant:
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is missing")
        if grant_type != CLIENT_CREDENTIALS:
            raise OAuthError("unsupported_grant_type", "only client_credentials is supported")
        if not client_id or not client_secret:
            raise OAuthError("invalid_client", "client authentication is missing")
        scopes, participant_id = self._authenticate(client_id, client_secret)
        granted = scopes
        if scope is not None and scope.strip():
            requested = frozenset(scope.split())
            if not requested <= scopes:
                raise OAuthError(
                    "invalid_scope", f"the client may not have {sorted(requested - scopes)}"
                )
            granted = requested
        minter = self._keys.minter()
        ttl = self._policy.access_token_ttl_s
        token = minter.access_token(
            client_id, granted, int(self._clock().timestamp()), ttl, participant_id
        )
        return TokenGrant(access_token=token, expires_in=ttl, scope=" ".join(sorted(granted)))

    def _authenticate(self, client_id: str, secret: str) -> tuple[frozenset[str], str | None]:
        if hmac.compare_digest(_digest(client_id), _digest(self._bootstrap.client_id)):
            if hmac.compare_digest(_digest(secret), _digest(self._bootstrap.secret)):
                return frozenset({"ops"}), None
            raise OAuthError("invalid_client", "client authentication failed")
        with self._uow() as store:
            client = store.get(ApiClient, client_id) if len(client_id) <= 128 else None
            participant = (
                store.get(Participant, client.participant_id)
                if client is not None and client.participant_id
                else None
            )
        # The hash is checked outside the transaction: it takes tens of milliseconds.
        if client is None:
            spend_like_a_check(secret)
            raise OAuthError("invalid_client", "client authentication failed")
        if not verify_secret(secret, client.secret_hash):
            raise OAuthError("invalid_client", "client authentication failed")
        if client.status is ClientStatus.DISABLED:
            raise OAuthError("invalid_client", "the client is disabled")
        if participant is not None and participant.status is ParticipantStatus.CLOSED:
            raise OAuthError("unauthorized_client", "the client's participant is closed")
        return client.scopes, client.participant_id
