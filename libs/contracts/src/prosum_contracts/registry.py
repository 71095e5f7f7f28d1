"""JSON Schema registry for integration events: validation on publish and on consume.

Schemas live as files named ``<type>.v<version>.json`` (for example
``identity.participant_registered.v1.json``); each carries ``x-topic``, the topic its events go
to. The package ships the prosum catalogue under ``schemas/events``; deployments may add
directories of their own (add-on contracts of partner systems).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson
from fastjsonschema.draft07 import CodeGeneratorDraft07

from prosum_contracts.envelope import Envelope
from prosum_contracts.errors import InvalidEvent, MalformedMessage, UnknownEventType

_FILE_NAME = re.compile(r"^(?P<type>[a-z][a-z0-9_.]*)\.v(?P<version>\d+)\.json$")


@dataclass(frozen=True, slots=True)
class EventSchema:
    type: str
    version: int
    topic: str
    document: Mapping[str, Any]
    validate: Callable[[Any], Any]


def _compile(document: Mapping[str, Any]) -> Callable[[Any], Any]:
    validator: Callable[[Any], Any] = fastjsonschema.compile(dict(document))
    return validator


def _load_envelope_schema() -> Mapping[str, Any]:
    text = resources.files("prosum_contracts").joinpath("schemas", "envelope.v1.json").read_bytes()
    document: Mapping[str, Any] = orjson.loads(text)
    return document


class SchemaRegistry:
    """All event schemas a process knows, compiled once."""

    def __init__(self, schemas: Iterable[EventSchema]) -> None:
        self._schemas: dict[tuple[str, int], EventSchema] = {}
        for schema in schemas:
            key = (schema.type, schema.version)
            if key in self._schemas:
                raise ValueError(f"schema {schema.type} v{schema.version} registered twice")
            self._schemas[key] = schema
        self._validate_envelope = _compile(_load_envelope_schema())

    @classmethod
    def load(cls, extra_dirs: Iterable[Path] = ()) -> SchemaRegistry:
        """The packaged catalogue plus the schema files found in ``extra_dirs``."""
        documents: list[tuple[str, bytes]] = []
        packaged = resources.files("prosum_contracts").joinpath("schemas", "events")
        for entry in packaged.iterdir():
            if entry.name.endswith(".json"):
                documents.append((entry.name, entry.read_bytes()))
        for directory in extra_dirs:
            for path in sorted(Path(directory).glob("*.json")):
                documents.append((path.name, path.read_bytes()))
        return cls(_schema_from_file(name, body) for name, body in documents)

    def schemas(self) -> list[EventSchema]:
        return sorted(self._schemas.values(), key=lambda s: (s.type, s.version))

    def get(self, type_: str, version: int) -> EventSchema:
        try:
            return self._schemas[(type_, version)]
        except KeyError:
            raise UnknownEventType(type_, version) from None

    def knows(self, type_: str, version: int) -> bool:
        return (type_, version) in self._schemas

    def topic_for(self, type_: str, version: int) -> str:
        return self.get(type_, version).topic

    def validate(self, envelope: Envelope) -> None:
        """Validate an envelope before it is published; raises a ContractError."""
        self._check_dict(envelope.to_dict())

    def check(self, document: dict[str, Any]) -> None:
        """Validate an envelope already in its JSON form (``Envelope.to_dict()``), for a caller
        that goes on to serialize that same document; raises a ContractError.

        The envelope's own fields are checked by ``envelope_problem``, the envelope schema's
        rules written out in Python (about 1 µs where the compiled schema takes 5; a test
        keeps the two in agreement on any JSON document); the data by its type's schema. Messages
        read from Kafka go through the same checks (``decode``)."""
        problem = envelope_problem(document)
        if problem is not None:
            raise MalformedMessage(f"envelope: {problem}")
        self._check_data(document)

    def decode(self, raw: bytes | None) -> Envelope:
        """Parse and validate a message value read from Kafka; raises a ContractError."""
        if raw is None:
            raise MalformedMessage("message has no value")
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise MalformedMessage(f"not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise MalformedMessage("message value is not a JSON object")
        self.check(document)
        return Envelope.from_dict(document)

    def _check_dict(self, document: dict[str, Any]) -> None:
        try:
            self._validate_envelope(document)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise MalformedMessage(f"envelope: {exc.message}") from None
        self._check_data(document)

    def _check_data(self, document: dict[str, Any]) -> None:
        """The data against its type's schema (the envelope already passed)."""
        schema = self.get(document["type"], document["schema_version"])
        try:
            schema.validate(document["data"])
        except fastjsonschema.JsonSchemaValueException as exc:
            raise InvalidEvent(
                f"{document['type']} v{document['schema_version']}: {exc.message}"
            ) from None


_ENVELOPE_KEYS = frozenset(
    {
        "envelope_version",
        "event_id",
        "type",
        "schema_version",
        "source",
        "subject",
        "occurred_at",
        "trace",
        "data",
        "correlation_id",
        "causation_id",
    }
)
_REQUIRED_KEYS = _ENVELOPE_KEYS - {"correlation_id", "causation_id"}
# The schema's patterns end in "$", which fastjsonschema reads as \Z (no newline after).
_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+\Z")
_SOURCES = frozenset({"identity", "metering", "orderbook", "settlement", "ledger-adapter", "ops"})
_OCCURRED_AT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})\Z")
# The schema's "format": "date-time", as the compiled schema checks it.
_DATE_TIME = re.compile(CodeGeneratorDraft07.FORMAT_REGEXS["date-time"])
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}\Z")


def _number(value: Any) -> bool:
    """A JSON number (1.0 is the integer 1 to JSON Schema; a boolean is not a number)."""
    return type(value) is int or type(value) is float


def _text(value: Any, low: int, high: int) -> bool:
    return type(value) is str and low <= len(value) <= high


def envelope_problem(document: Any) -> str | None:
    """What breaks ``schemas/envelope.v1.json`` in ``document``, or None: its rules in Python
    (the compiled schema stays the reference; a property test holds the two in agreement)."""
    if not isinstance(document, dict):
        return "must be an object"
    keys = document.keys()
    if not keys <= _ENVELOPE_KEYS:
        return f"unknown properties {sorted(keys - _ENVELOPE_KEYS)}"
    if not keys >= _REQUIRED_KEYS:
        return f"missing properties {sorted(_REQUIRED_KEYS - keys)}"
    version = document["envelope_version"]
    if not _number(version) or version != 1:
        return "envelope_version must be 1"
    if not _text(document["event_id"], 1, 128):
        return "event_id must be a string of 1 to 128 characters"
    type_ = document["type"]
    if not _text(type_, 0, 128) or not _TYPE.search(type_):
        return "type must be a dotted lowercase name of at most 128 characters"
    schema_version = document["schema_version"]
    if not _number(schema_version) or schema_version % 1 or schema_version < 1:
        return "schema_version must be an integer of at least 1"
    if type(document["source"]) is not str or document["source"] not in _SOURCES:
        return f"source must be one of {sorted(_SOURCES)}"
    if not _text(document["subject"], 1, 256):
        return "subject must be a string of 1 to 256 characters"
    occurred_at = document["occurred_at"]
    if (
        type(occurred_at) is not str
        or not _OCCURRED_AT.search(occurred_at)
        or not _DATE_TIME.search(occurred_at)
    ):
        return "occurred_at must be an RFC 3339 date-time"
    trace = document["trace"]
    if not isinstance(trace, dict) or not trace.keys() <= {"traceparent", "tracestate"}:
        return "trace must be an object of traceparent and tracestate"
    if "traceparent" in trace and (
        type(trace["traceparent"]) is not str or not _TRACEPARENT.search(trace["traceparent"])
    ):
        return "trace.traceparent must be a W3C traceparent"
    if "tracestate" in trace and not _text(trace["tracestate"], 0, 512):
        return "trace.tracestate must be a string of at most 512 characters"
    for name in ("correlation_id", "causation_id"):
        if name in document and not _text(document[name], 0, 128):
            return f"{name} must be a string of at most 128 characters"
    if not isinstance(document["data"], dict):
        return "data must be an object"
    return None


def _schema_from_file(name: str, body: bytes) -> EventSchema:
    match = _FILE_NAME.match(name)
    if match is None:
        raise ValueError(f"schema file {name!r} is not named <type>.v<version>.json")
    document = orjson.loads(body)
    topic = document.get("x-topic")
    if not isinstance(topic, str):
        raise ValueError(f"schema file {name!r} has no x-topic")
    return EventSchema(
        type=match["type"],
        version=int(match["version"]),
        topic=topic,
        document=document,
        validate=_compile(document),
    )
