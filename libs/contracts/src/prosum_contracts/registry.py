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
        that goes on to serialize that same document; raises a ContractError."""
        self._check_dict(document)

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
        self._check_dict(document)
        return Envelope.from_dict(document)

    def _check_dict(self, document: dict[str, Any]) -> None:
        try:
            self._validate_envelope(document)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise MalformedMessage(f"envelope: {exc.message}") from None
        schema = self.get(document["type"], document["schema_version"])
        try:
            schema.validate(document["data"])
        except fastjsonschema.JsonSchemaValueException as exc:
            raise InvalidEvent(
                f"{document['type']} v{document['schema_version']}: {exc.message}"
            ) from None


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
