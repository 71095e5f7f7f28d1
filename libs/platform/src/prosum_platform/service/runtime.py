"""Wiring shared by all services: store, outbox relay, consumers, telemetry and the HTTP app.

A service describes itself with a ``ServiceDefinition`` whose ``build`` adds its own routers,
consumers and readiness checks to the ``Platform``. Nothing is built at import time:
``build_platform`` and ``create_app`` are called by the service's entrypoint or by tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from sqlalchemy import Engine, MetaData

from prosum_contracts import SchemaRegistry
from prosum_contracts.topics import ALL_TOPICS
from prosum_platform.eventstore.engine import create_store_engine
from prosum_platform.eventstore.store import EventStore
from prosum_platform.messaging.consumer import EventConsumer, Subscription
from prosum_platform.messaging.kafka import KafkaConfig, ensure_topics, kafka_reachable
from prosum_platform.messaging.relay import OutboxRelay, Partitioner
from prosum_platform.settings import ServiceSettings
from prosum_platform.telemetry import Telemetry, current_trace_context, setup_telemetry

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]


@dataclass(frozen=True)
class ConsumerSpec:
    name: str
    subscription: Subscription


@dataclass
class ServiceParts:
    """What one service adds to the platform."""

    routers: list[APIRouter] = field(default_factory=list)
    consumers: list[ConsumerSpec] = field(default_factory=list)
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    # Topics whose keys the relay spreads over partitions by a rule of the service's own
    # instead of by hash (see ``OutboxRelay``).
    partitioners: dict[str, Partitioner] = field(default_factory=dict)


@dataclass
class Platform:
    settings: ServiceSettings
    engine: Engine
    store: EventStore
    registry: SchemaRegistry
    telemetry: Telemetry
    kafka: KafkaConfig


@dataclass(frozen=True)
class ServiceDefinition:
    name: str
    package: str
    title: str
    description: str
    default_port: int
    build: Callable[[Platform], ServiceParts]
    # The service's own tables beside the platform's, for schema checks against migrations.
    tables: MetaData | None = None


def build_platform(
    definition: ServiceDefinition,
    settings: ServiceSettings | None = None,
    *,
    telemetry: Telemetry | None = None,
    registry: SchemaRegistry | None = None,
) -> Platform:
    settings = settings or ServiceSettings(definition.name)
    engine = create_store_engine(settings.database_url, pool_size=settings.database.pool_size)
    registry = registry or SchemaRegistry.load(settings.contracts.extra_schema_dirs)
    telemetry = telemetry or setup_telemetry(
        definition.name, otlp_endpoint=settings.telemetry.endpoint
    )
    store = EventStore(engine, registry, trace_provider=current_trace_context)
    kafka = KafkaConfig(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        client_id=f"prosum-{definition.name}",
        session_timeout_ms=settings.kafka.session_timeout_ms,
        heartbeat_interval_ms=settings.kafka.heartbeat_interval_ms,
        fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
        group_prefix=settings.kafka.group_prefix,
    )
    return Platform(settings, engine, store, registry, telemetry, kafka)


class ServiceRuntime:
    """The background side of a service: outbox relay, consumers, extra workers."""

    def __init__(
        self,
        definition: ServiceDefinition,
        platform: Platform,
        parts: ServiceParts,
        *,
        run_relay: bool = True,
        run_consumers: bool = True,
    ) -> None:
        self.definition = definition
        self.platform = platform
        self.parts = parts
        self.relay = OutboxRelay(
            platform.store, platform.kafka, platform.telemetry, partitioners=parts.partitioners
        )
        self.run_relay = run_relay
        self.consumers = (
            [
                EventConsumer(
                    spec.name,
                    platform.store,
                    platform.registry,
                    platform.kafka,
                    spec.subscription,
                    platform.telemetry,
                )
                for spec in parts.consumers
            ]
            if run_consumers
            else []
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.started = False

    async def start(self) -> None:
        """Start the background work without waiting for the broker.

        The HTTP side must come up (and answer /health, and /ready with 503) even while Kafka
        is down; the relay and consumers connect when it answers.
        """
        topics_ready = asyncio.Event()

        async def prepare_topics() -> None:
            settings = self.platform.settings
            if settings.kafka.create_topics:
                await self._with_broker_retry(
                    lambda: ensure_topics(
                        self.platform.kafka, ALL_TOPICS, settings.kafka.partitions
                    )
                )
            topics_ready.set()

        async def run_relay() -> None:
            await topics_ready.wait()
            await self._with_broker_retry(self.relay.start)
            await self.relay.run()

        self._spawn(prepare_topics(), "topics")
        if self.run_relay:
            self._spawn(run_relay(), "relay")
        for consumer in self.consumers:

            async def run_consumer(consumer: EventConsumer = consumer) -> None:
                await topics_ready.wait()
                await self._with_broker_retry(consumer.start)
                await consumer.run()

            self._spawn(run_consumer(), f"consumer {consumer.name}")
        for worker in self.parts.background:
            self._spawn(worker(), getattr(worker, "__name__", "worker"))
        self.started = True

    async def _with_broker_retry(self, step: Callable[[], Awaitable[None]]) -> None:
        delay = 0.2
        while True:
            try:
                await step()
                return
            except Exception as exc:  # the broker may come up after us
                log.warning("%s: waiting for Kafka (%s)", self.definition.name, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: background task %s died", self.definition.name, name)
                raise

        self._tasks.append(asyncio.create_task(guarded(), name=name))

    async def stop(self) -> None:
        # Cancel first (a task may still be connecting), then close every client.
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for consumer in self.consumers:
            await consumer.stop()
        if self.run_relay:
            await self.relay.stop()
        for hook in self.parts.on_stop:
            await hook()

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, Any] = {}
        ready = True
        try:
            await anyio.to_thread.run_sync(self.platform.store.ping)
            checks["database"] = {"ok": True, "backend": self.platform.engine.dialect.name}
        except Exception as exc:
            ready = False
            checks["database"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        problem = await self._kafka_problem()
        checks["kafka"] = {"ok": problem is None, **({"error": problem} if problem else {})}
        ready = ready and problem is None
        if self.started:
            checks["outbox"] = {
                "pending": await anyio.to_thread.run_sync(self.platform.store.pending_outbox),
                "published": self.relay.published,
            }
            checks["consumers"] = {
                c.name: {"assigned": c.assigned.is_set(), "lag": sum(c.stats.lag().values())}
                for c in self.consumers
            }
        for name, check in self.parts.readiness.items():
            ok, detail = await check()
            checks[name] = {"ok": ok, **detail}
            ready = ready and ok
        return ready, checks

    async def _kafka_problem(self) -> str | None:
        producer = self.relay.producer
        if producer is None:
            return await kafka_reachable(self.platform.kafka)
        try:
            await asyncio.wait_for(producer.client.fetch_all_metadata(), 2.0)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None


def create_app(
    definition: ServiceDefinition,
    platform: Platform,
    parts: ServiceParts | None = None,
    *,
    run_relay: bool = True,
    run_consumers: bool = True,
    on_shutdown: Sequence[Callable[[], None]] = (),
    on_started: Sequence[Callable[[], None]] = (),
) -> FastAPI:
    """The service's HTTP app; its lifespan runs the relay and consumers.

    ``on_started`` runs once they started (the CLI freezes the start-up objects there).

    ``on_shutdown`` runs after they stopped (the CLI flushes telemetry and closes the pool
    there: uvicorn re-raises the stop signal once it returns, so code after it never runs).
    """
    parts = parts if parts is not None else definition.build(platform)
    runtime = ServiceRuntime(
        definition, platform, parts, run_relay=run_relay, run_consumers=run_consumers
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        for hook in on_started:
            hook()
        try:
            yield
        finally:
            await runtime.stop()
            for hook in on_shutdown:
                hook()

    app = FastAPI(
        title=definition.title,
        description=definition.description,
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.platform = platform

    @app.get("/health", tags=["operations"], summary="The process is alive")
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": definition.name}

    @app.get(
        "/ready",
        tags=["operations"],
        summary="The service can do its work: database and Kafka answer",
        responses={503: {"description": "a dependency is down; the body says which"}},
    )
    async def ready() -> JSONResponse:
        ok, checks = await runtime.readiness()
        body = {
            "status": "ready" if ok else "not_ready",
            "service": definition.name,
            "checks": checks,
            **parts.info,
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    for router in parts.routers:
        app.include_router(router)
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=platform.telemetry.tracer_provider,
        meter_provider=platform.telemetry.meter_provider,
        excluded_urls="health,ready",
        # One server span a request: the ASGI "http send"/"http receive" child spans (two or
        # three more a request) say nothing the server span does not.
        exclude_spans=["receive", "send"],
    )
    return app
