"""The integration event envelope: what every message on a prosum Kafka topic looks like.

The envelope is the published contract between services, the dashboard and partner systems.
Its own shape is fixed by ``schemas/envelope.v1.json``; the ``data`` of each event type is fixed
by that type's schema (see :mod:`prosum_contracts.registry`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

ENVELOPE_VERSION = 1


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_timestamp(moment: datetime) -> str:
    zone = moment.tzinfo
    if zone is UTC:  # most timestamps: no conversion to make
        return moment.isoformat(timespec="microseconds")[:-6] + "Z"
    if zone is None:
        raise ValueError("timestamps in events must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class TraceContext:
    """W3C trace context carried with an event so a trace can follow it across services."""

    traceparent: str | None = None
    tracestate: str | None = None

    def as_dict(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.traceparent:
            out["traceparent"] = self.traceparent
        if self.tracestate:
            out["tracestate"] = self.tracestate
        return out


@dataclass(frozen=True, slots=True)
class Envelope:
    """One integration event.

    ``subject`` is the id of the aggregate the event is about; it is also the Kafka key, so all
    events of one subject stay in order on one partition.
    """

    type: str
    schema_version: int
    source: str
    subject: str
    data: dict[str, Any]
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    occurred_at: datetime = field(default_factory=utc_now)
    trace: TraceContext = field(default_factory=TraceContext)
    correlation_id: str | None = None
    causation_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "envelope_version": ENVELOPE_VERSION,
            "event_id": self.event_id,
            "type": self.type,
            "schema_version": self.schema_version,
            "source": self.source,
            "subject": self.subject,
            "occurred_at": format_timestamp(self.occurred_at),
            "trace": self.trace.as_dict(),
            "data": self.data,
        }
        if self.correlation_id is not None:
            out["correlation_id"] = self.correlation_id
        if self.causation_id is not None:
            out["causation_id"] = self.causation_id
        return out

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Envelope:
        """Build an envelope from a dict that has already passed the envelope schema."""
        trace = raw.get("trace") or {}
        return cls(
            event_id=raw["event_id"],
            type=raw["type"],
            schema_version=raw["schema_version"],
            source=raw["source"],
            subject=raw["subject"],
            occurred_at=parse_timestamp(raw["occurred_at"]),
            trace=TraceContext(trace.get("traceparent"), trace.get("tracestate")),
            data=raw["data"],
            correlation_id=raw.get("correlation_id"),
            causation_id=raw.get("causation_id"),
        )

    def with_trace(self, trace: TraceContext) -> Envelope:
        return replace(self, trace=trace)

    def caused(
        self, type: str, schema_version: int, source: str, subject: str, data: dict[str, Any]
    ) -> Envelope:
        """A follow-up event caused by this one: it keeps the correlation id and the trace."""
        return Envelope(
            type=type,
            schema_version=schema_version,
            source=source,
            subject=subject,
            data=data,
            trace=self.trace,
            correlation_id=self.correlation_id or self.event_id,
            causation_id=self.event_id,
        )
