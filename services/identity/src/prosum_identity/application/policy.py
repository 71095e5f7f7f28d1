"""The numbers identity works with (token lifetimes, challenge rate, default limits), taken from
settings by the bootstrap."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from prosum_identity.domain.device import RateLimit
from prosum_identity.domain.model import Limits


@dataclass(frozen=True)
class IdentityPolicy:
    access_token_ttl_s: int = 900
    threshold_ttl_s: int = 900
    challenge_ttl_s: int = 60
    challenge_limit: int = 10
    challenge_window_s: int = 60
    default_limits: Limits = field(
        default_factory=lambda: Limits(
            max_order_wh=100_000, max_open_wh=500_000, max_ecoin=10_000_000
        )
    )
    # A new signing key is published this long before it signs, so verifiers that learn keys
    # from events or a cached JWKS know it before they meet a token signed with it.
    key_publish_lead_s: int = 0
    # The verifiers' clock leeway (prosum_auth.TokenVerifier): a retired key stays published
    # this much longer than the longest token lifetime.
    verifier_leeway_s: int = 5

    def __post_init__(self) -> None:
        for name in ("access_token_ttl_s", "threshold_ttl_s", "challenge_ttl_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 second")
        RateLimit(self.challenge_limit, timedelta(seconds=self.challenge_window_s))

    @property
    def challenge_rate(self) -> RateLimit:
        return RateLimit(self.challenge_limit, timedelta(seconds=self.challenge_window_s))

    @property
    def key_retention(self) -> timedelta:
        """How long a retired key stays published after its successor starts signing."""
        longest = max(self.access_token_ttl_s, self.threshold_ttl_s)
        return timedelta(seconds=longest + self.verifier_leeway_s + 1)
