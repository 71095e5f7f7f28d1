"""Who may read what: the "hash address of shared data" served only to those entitled.

Readings, and the evidence behind a mint, are served to

- their owner (the participant whose device measured them),
- ops,
- a participant that traded with the owner in an interval the data covers (the buyer of the
  owner's energy, or the seller of what the owner bought).

Everyone else is refused, whether or not the data exists. Proofs of inclusion carry only
hashes and are public.
"""

from __future__ import annotations

from dataclasses import dataclass

from prosum_metering.application.ports import MeteringQueries


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks: ops, or a participant (by access token or by a ``read_data`` threshold)."""

    subject: str
    ops: bool = False
    participant_id: str | None = None


class AccessDenied(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.reason = "not_entitled"
        self.detail = detail


class InvalidQuery(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class NotFound(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def entitlement(
    queries: MeteringQueries, requester: Requester, owner: str, start: int, end: int
) -> str | None:
    """Why ``requester`` may read ``owner``'s data of [start, end): owner, ops or
    counterparty; None when it may not."""
    if requester.ops:
        return "ops"
    if requester.participant_id is None:
        return None
    if requester.participant_id == owner:
        return "owner"
    if queries.traded_windows(owner, requester.participant_id, start, end):
        return "counterparty"
    return None


def require(
    queries: MeteringQueries, requester: Requester, owner: str, start: int, end: int
) -> str:
    why = entitlement(queries, requester, owner, start, end)
    if why is None:
        raise AccessDenied(f"{requester.subject} may not read this participant's data")
    return why
