"""Turns domain events into stored payloads and back, with upcasters for old versions.

Money and energy stay exact: ``Decimal`` is written as a string and read back as ``Decimal``
(the event class's annotations say which fields are decimals); floats are refused.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any

from prosum_platform.domain import DomainEvent

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


_PLAIN = frozenset({str, int, bool, type(None)})
# Per dataclass: its field names, and a getter of their values in that order.
_FIELDS: dict[type, tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]] = {}


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    if len(names) > 1:
        return attrgetter(*names)
    return lambda value: tuple(getattr(value, name) for name in names)


def _encode(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN:  # most values: no checks to run
        return value
    if isinstance(value, float):
        raise TypeError("floats are not allowed in events: use int or Decimal")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise TypeError("datetimes in events must be timezone-aware")
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    fields = _FIELDS.get(kind)
    if fields is None:
        if not (dataclasses.is_dataclass(value) and not isinstance(value, type)):
            return value
        names = tuple(f.name for f in dataclasses.fields(value))
        fields = _FIELDS[kind] = (names, _getter(names))
    names, values = fields
    return {
        name: item if type(item) in _PLAIN else _encode(item)
        for name, item in zip(names, values(value), strict=True)
    }


def _decoder_for(annotation: Any) -> Callable[[Any], Any] | None:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Decimal:
        return Decimal
    if annotation is datetime:
        return datetime.fromisoformat
    if origin is tuple and args:
        element = _decoder_for(args[0])
        if element is None:
            return tuple
        return lambda seq: tuple(element(v) for v in seq)
    if origin in (typing.Union, types.UnionType) and args:
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            optional = _decoder_for(non_none[0])
            if optional is not None:
                return lambda v: None if v is None else optional(v)
    return None


class EventCodec:
    """Registry of a service's domain event classes, by stored type name."""

    def __init__(self) -> None:
        self._classes: dict[str, type[DomainEvent]] = {}
        self._decoders: dict[str, dict[str, Callable[[Any], Any]]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, *classes: type[DomainEvent]) -> EventCodec:
        for cls in classes:
            name = cls.event_type
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"event type {name!r} registered twice")
            self._classes[name] = cls
            hints = typing.get_type_hints(cls)
            decoders: dict[str, Callable[[Any], Any]] = {}
            for f in dataclasses.fields(cls):
                decoder = _decoder_for(hints.get(f.name))
                if decoder is not None:
                    decoders[f.name] = decoder
            self._decoders[name] = decoders
        return self

    def upcaster(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register a function turning a v``from_version`` payload into v``from_version+1``."""

        def register(fn: Upcaster) -> Upcaster:
            self._upcasters[(event_type, from_version)] = fn
            return fn

        return register

    def encode(self, event: DomainEvent) -> tuple[str, int, dict[str, Any]]:
        payload = _encode(event)
        assert isinstance(payload, dict)
        return event.event_type, event.schema_version, payload

    def decode(self, event_type: str, version: int, payload: dict[str, Any]) -> DomainEvent:
        try:
            cls = self._classes[event_type]
        except KeyError:
            raise LookupError(f"unknown stored event type {event_type!r}") from None
        while version < cls.schema_version:
            upcast = self._upcasters.get((event_type, version))
            if upcast is None:
                raise LookupError(f"no upcaster for {event_type} v{version}")
            payload = upcast(dict(payload))
            version += 1
        decoders = self._decoders[event_type]
        kwargs = {
            key: (decoders[key](value) if key in decoders else value)
            for key, value in payload.items()
        }
        return cls(**kwargs)
