"""Refusals of the identity domain: a stable reason code for clients and the kind of refusal,
which the HTTP layer turns into a status code."""

from __future__ import annotations

from enum import StrEnum

from prosum_platform.domain import DomainRuleViolation


class Refusal(StrEnum):
    INVALID = "invalid"  # the request is well-formed JSON but its content is unacceptable
    UNAUTHENTICATED = "unauthenticated"  # a proof (signature, secret) does not hold
    FORBIDDEN = "forbidden"  # who asks is known, but may not do this
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"  # the current state does not allow it
    GONE = "gone"  # it existed but is no longer usable (an expired challenge)
    RATE_LIMITED = "rate_limited"


class IdentityError(DomainRuleViolation):
    """A command was refused; nothing was changed."""

    def __init__(
        self, kind: Refusal, reason: str, detail: str, *, retry_after_s: int | None = None
    ) -> None:
        super().__init__(reason, detail)
        self.kind = kind
        self.retry_after_s = retry_after_s


def not_found(reason: str, detail: str) -> IdentityError:
    return IdentityError(Refusal.NOT_FOUND, reason, detail)


def conflict(reason: str, detail: str) -> IdentityError:
    return IdentityError(Refusal.CONFLICT, reason, detail)


def forbidden(reason: str, detail: str) -> IdentityError:
    return IdentityError(Refusal.FORBIDDEN, reason, detail)


def invalid(reason: str, detail: str) -> IdentityError:
    return IdentityError(Refusal.INVALID, reason, detail)
