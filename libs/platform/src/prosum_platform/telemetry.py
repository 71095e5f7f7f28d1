"""OpenTelemetry for prosum services: traces across HTTP and Kafka, metrics for flow and lag.

Nothing here is global at import time. ``setup_telemetry`` builds the providers a process uses
and hands them to the components that need them; the trace context travels inside each event
(W3C ``traceparent``) so the consumer of an event continues the trace of the request that
caused it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from prosum_contracts import TraceContext

_PROPAGATOR = TraceContextTextMapPropagator()


def current_trace_context() -> TraceContext:
    """The W3C trace context of the active span, to put into an outgoing event."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return TraceContext(carrier.get("traceparent"), carrier.get("tracestate"))


def context_from(trace_context: TraceContext) -> otel_context.Context:
    """An OpenTelemetry context whose parent is the span that produced an event."""
    return _PROPAGATOR.extract(trace_context.as_dict())


@dataclass
class Telemetry:
    service_name: str
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    tracer: Tracer
    meter: Meter
    _gauges: dict[str, Callable[[], Iterable[tuple[float, dict[str, str]]]]] = field(
        default_factory=dict
    )

    def observe(
        self,
        name: str,
        description: str,
        unit: str,
        callback: Callable[[], Iterable[tuple[float, dict[str, str]]]],
    ) -> None:
        """Register an observable gauge fed by ``callback`` (value, attributes) pairs."""

        def read(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(value, attributes) for value, attributes in callback()]

        self._gauges[name] = callback
        self.meter.create_observable_gauge(name, [read], unit=unit, description=description)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def setup_telemetry(
    service_name: str,
    *,
    otlp_endpoint: str | None = None,
    span_processors: Iterable[SpanProcessor] = (),
    span_exporters: Iterable[SpanExporter] = (),
    metric_readers: Iterable[MetricReader] = (),
    resource_attributes: dict[str, Any] | None = None,
) -> Telemetry:
    """Providers for one process. With ``otlp_endpoint`` traces and metrics go out over OTLP;
    tests pass in-memory exporters and readers instead."""
    resource = Resource.create({"service.name": service_name, **(resource_attributes or {})})
    tracer_provider = TracerProvider(resource=resource)
    for processor in span_processors:
        tracer_provider.add_span_processor(processor)
    for exporter in span_exporters:
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    readers = list(metric_readers)
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        base = otlp_endpoint.rstrip("/")
        tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces"))
        )
        readers.append(
            PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{base}/v1/metrics"))
        )
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    return Telemetry(
        service_name=service_name,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        tracer=tracer_provider.get_tracer("prosum"),
        meter=meter_provider.get_meter("prosum"),
    )


MAX_LINKS = 128


def batch_span(
    tracer: Tracer, name: str, trace_contexts: Iterable[TraceContext], attributes: dict[str, Any]
) -> Any:
    """Start a consumer span for a batch of events, linked to the spans that produced them
    (at most ``MAX_LINKS``), as OpenTelemetry's messaging conventions have batch receivers do."""
    links: list[trace.Link] = []
    for trace_context in trace_contexts:
        if len(links) == MAX_LINKS:
            break
        if trace_context.traceparent:
            parent = trace.get_current_span(context_from(trace_context)).get_span_context()
            if parent.is_valid:
                links.append(trace.Link(parent))
    return tracer.start_as_current_span(
        name, kind=trace.SpanKind.CONSUMER, links=links, attributes=attributes
    )


def span_in_event_context(
    tracer: Tracer, name: str, trace_context: TraceContext, attributes: dict[str, Any]
) -> Any:
    """Start a consumer span that continues the trace carried by an event."""
    return tracer.start_as_current_span(
        name,
        context=context_from(trace_context),
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
    )
