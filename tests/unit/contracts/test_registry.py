"""The integration contract: envelopes round-trip, and what breaks the contract is named."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from prosum_contracts import (
    Envelope,
    InvalidEvent,
    MalformedMessage,
    SchemaRegistry,
    TraceContext,
    UnknownEventType,
)

WIDGET = "platformtest.widget_recorded"


def widget(**data: object) -> Envelope:
    return Envelope(
        type=WIDGET,
        schema_version=1,
        source="metering",
        subject="w-1",
        data={"widget_id": "w-1", "sequence": 1, "amount": "0.125", **data},
        trace=TraceContext("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    )


def test_an_envelope_survives_the_wire(registry: SchemaRegistry) -> None:
    sent = widget()
    received = registry.decode(sent.to_bytes())
    assert received == sent
    assert received.occurred_at.tzinfo is not None


def test_a_follow_up_event_keeps_correlation_and_trace() -> None:
    first = widget()
    second = first.caused(
        WIDGET, 1, "orderbook", "w-2", {"widget_id": "w-2", "sequence": 2, "amount": "1"}
    )
    assert second.causation_id == first.event_id
    assert second.correlation_id == first.event_id
    assert second.trace == first.trace
    assert second.event_id != first.event_id


@pytest.mark.parametrize(
    ("raw", "error", "needle"),
    [
        (b"", MalformedMessage, "not JSON"),
        (b"[1, 2]", MalformedMessage, "not a JSON object"),
        (b'{"type": "x"}', MalformedMessage, "envelope"),
        (None, MalformedMessage, "no value"),
    ],
)
def test_malformed_messages_are_named(
    registry: SchemaRegistry, raw: bytes | None, error: type[Exception], needle: str
) -> None:
    with pytest.raises(error, match=needle) as caught:
        registry.decode(raw)
    assert caught.value.reason == "malformed"  # type: ignore[attr-defined]


def test_unknown_types_and_versions_are_refused(registry: SchemaRegistry) -> None:
    raw = widget().to_dict()
    for type_, version in [("platformtest.nothing", 1), (WIDGET, 2)]:
        with pytest.raises(UnknownEventType) as caught:
            registry.decode(json.dumps(raw | {"type": type_, "schema_version": version}).encode())
        assert caught.value.reason == "unknown_type"


@pytest.mark.parametrize(
    "data",
    [{"sequence": -1}, {"amount": 1.5}, {"amount": "1e3"}, {"unexpected": True}, {"widget_id": ""}],
)
def test_data_that_breaks_its_schema_is_invalid(
    registry: SchemaRegistry, data: dict[str, object]
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        registry.validate(widget(**data))
    assert caught.value.reason == "invalid"


def test_envelope_fields_are_checked(registry: SchemaRegistry) -> None:
    raw = widget().to_dict()
    for broken in [
        raw | {"source": "somebody"},
        raw | {"occurred_at": "yesterday"},
        raw | {"trace": {"traceparent": "nope"}},
        raw | {"extra": 1},
        {k: v for k, v in raw.items() if k != "subject"},
    ]:
        with pytest.raises(MalformedMessage):
            registry.decode(json.dumps(broken).encode())


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        Envelope(WIDGET, 1, "identity", "w", {}, occurred_at=datetime(2026, 1, 1)).to_dict()
    assert (
        Envelope(WIDGET, 1, "identity", "w", {}, occurred_at=datetime(2026, 1, 1, tzinfo=UTC))
        .to_dict()["occurred_at"]
        .endswith("Z")
    )


def test_every_packaged_and_test_schema_is_valid_draft7_with_a_topic(
    registry: SchemaRegistry,
) -> None:
    assert registry.schemas(), "the registry holds schemas"
    for schema in registry.schemas():
        jsonschema.Draft7Validator.check_schema(dict(schema.document))
        assert schema.topic.startswith("prosum.")


def test_schema_files_must_be_named_by_type_and_version(tmp_path: Path) -> None:
    (tmp_path / "badname.json").write_text('{"x-topic": "prosum.t"}')
    with pytest.raises(ValueError, match="named"):
        SchemaRegistry.load([tmp_path])
