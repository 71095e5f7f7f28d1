"""What every identity aggregate shares: a stream per natural id, under a prefix per kind."""

from __future__ import annotations

from typing import ClassVar

from prosum_platform.domain import Aggregate


class IdentityAggregate(Aggregate):
    """An aggregate whose stream id is ``STREAM_PREFIX + key`` (``participant:p-7``), so the
    kinds never collide in the one event store."""

    STREAM_PREFIX: ClassVar[str] = ""

    @classmethod
    def stream(cls, key: str) -> str:
        return cls.STREAM_PREFIX + key

    @property
    def key(self) -> str:
        return self.id.removeprefix(self.STREAM_PREFIX)
