"""A trace started by an HTTP request continues in the consumer of the event it caused, in
another service, through the real broker; and the flow metrics are recorded."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from prosum_contracts import Envelope, SchemaRegistry
from prosum_platform.eventstore import NewEvent, Transaction, metadata
from prosum_platform.messaging import EventConsumer, KafkaConfig, OutboxRelay, Subscription
from prosum_platform.service import (
    Platform,
    ServiceDefinition,
    ServiceParts,
    build_platform,
    create_app,
)
from prosum_platform.settings import ServiceSettings
from prosum_platform.telemetry import setup_telemetry

pytestmark = [pytest.mark.kafka]
WIDGET = "platformtest.widget_recorded"


def _settings(
    monkeypatch: pytest.MonkeyPatch, db: Path, kafka: KafkaConfig, name: str
) -> ServiceSettings:
    monkeypatch.setenv("PROSUM_DB_URL", f"sqlite:///{db}")
    monkeypatch.setenv("PROSUM_KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    return ServiceSettings(name)


async def test_a_trace_started_at_an_http_request_is_continued_by_the_consumer(
    kafka: KafkaConfig, tmp_path: Path, registry: SchemaRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = f"widgets-{uuid.uuid4().hex[:8]}"

    # Service A: an HTTP endpoint whose command writes an event through the outbox.
    def build_a(platform: Platform) -> ServiceParts:
        router = APIRouter()

        @router.post("/widgets/{widget_id}", status_code=202)
        def record(widget_id: str) -> dict[str, str]:
            with platform.store.transaction() as tx:
                tx.append(widget_id, tx.current_version(widget_id), [NewEvent("Recorded", 1, {})])
                sent = tx.enqueue(
                    Envelope(
                        type=WIDGET,
                        schema_version=1,
                        source="identity",
                        subject=widget_id,
                        data={"widget_id": widget_id, "sequence": 1, "amount": "1"},
                    ),
                    topic,
                )
            return {"event_id": sent.event_id}

        return ServiceParts(routers=[router])

    spans_a, spans_b = InMemorySpanExporter(), InMemorySpanExporter()
    metrics_b = InMemoryMetricReader()
    telemetry_a = setup_telemetry("identity", span_processors=[SimpleSpanProcessor(spans_a)])
    telemetry_b = setup_telemetry(
        "metering", span_processors=[SimpleSpanProcessor(spans_b)], metric_readers=[metrics_b]
    )
    definition = ServiceDefinition("identity", "prosum_identity", "A", "test", 0, build_a)
    platform_a = build_platform(
        definition,
        _settings(monkeypatch, tmp_path / "a.db", kafka, "identity"),
        telemetry=telemetry_a,
        registry=registry,
    )
    metadata.create_all(platform_a.engine)
    app = create_app(definition, platform_a)

    # Service B: a consumer in its own store, with its own telemetry.
    platform_b = build_platform(
        definition,
        _settings(monkeypatch, tmp_path / "b.db", kafka, "metering"),
        telemetry=telemetry_b,
        registry=registry,
    )
    metadata.create_all(platform_b.engine)

    def apply(envelope: Envelope, tx: Transaction) -> None:
        tx.append(f"seen-{envelope.subject}", 0, [NewEvent("Seen", 1, {})])

    consumer = EventConsumer(
        "metering-trace-test",
        platform_b.store,
        registry,
        kafka,
        Subscription((topic,), {WIDGET: apply}),
        telemetry_b,
    )
    relay = OutboxRelay(platform_a.store, kafka, telemetry_a)
    await relay.start()
    await consumer.start()
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(consumer.run())]
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://a"
        ) as client:
            response = await client.post("/widgets/w-1")
        assert response.status_code == 202
        for _ in range(300):
            if consumer.stats.applied:
                break
            await asyncio.sleep(0.05)
        assert consumer.stats.applied == 1
    finally:
        await consumer.stop()
        await relay.stop()
        for task in tasks:
            task.cancel()

    server_span = next(s for s in spans_a.get_finished_spans() if s.kind is SpanKind.SERVER)
    consumer_span = next(s for s in spans_b.get_finished_spans() if s.name == f"process {WIDGET}")
    assert consumer_span.kind is SpanKind.CONSUMER
    assert consumer_span.context.trace_id == server_span.context.trace_id
    assert consumer_span.parent is not None
    assert consumer_span.parent.span_id == server_span.context.span_id
    assert consumer_span.attributes["messaging.destination.name"] == topic

    data = metrics_b.get_metrics_data()
    names = {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert "prosum.consumer.applied" in names
    assert "prosum.event.latency" in names
    assert "prosum.consumer.lag" in names
    applied = sum(p.value for p in names["prosum.consumer.applied"].data.data_points)
    assert applied == 1
