"""prosum integration contract: the envelope, event schemas and topics shared by all services."""

from prosum_contracts.envelope import Envelope, TraceContext, format_timestamp, parse_timestamp
from prosum_contracts.errors import ContractError, InvalidEvent, MalformedMessage, UnknownEventType
from prosum_contracts.registry import EventSchema, SchemaRegistry

__all__ = [
    "ContractError",
    "Envelope",
    "EventSchema",
    "InvalidEvent",
    "MalformedMessage",
    "SchemaRegistry",
    "TraceContext",
    "UnknownEventType",
    "format_timestamp",
    "parse_timestamp",
]
