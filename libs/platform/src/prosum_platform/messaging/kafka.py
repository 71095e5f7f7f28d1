"""Connection settings and topic administration for aiokafka (the only Kafka client)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    bootstrap_servers: str
    client_id: str = "prosum"
    # tansu joins consumer groups slowly with long session timeouts; 2-6 s keeps joins quick.
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    request_timeout_ms: int = 15000
    # tansu answers a fetch only when the wait runs out, so a long wait is pure latency.
    fetch_max_wait_ms: int = 50
    # Prefix of consumer group ids, so several deployments can share one Kafka cluster.
    group_prefix: str = ""

    def producer(self) -> AIOKafkaProducer:
        # acks=all and no idempotence: tansu (and aiokafka's InitProducerId v0) cannot do
        # idempotent producers, so duplicates are handled by the consumers instead.
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=False,
            linger_ms=2,
            max_batch_size=256 * 1024,
            request_timeout_ms=self.request_timeout_ms,
        )


async def ensure_topics(
    config: KafkaConfig, topics: Iterable[str], partitions: int, replication: int = 1
) -> None:
    """Create the topics that do not exist yet."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=config.bootstrap_servers, client_id=f"{config.client_id}-admin"
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(name, partitions, replication) for name in missing]
                )
    finally:
        await admin.close()


async def kafka_reachable(config: KafkaConfig, timeout: float = 2.0) -> str | None:
    """None when a broker answers a metadata request, else what went wrong."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=config.bootstrap_servers,
        client_id=f"{config.client_id}-probe",
        request_timeout_ms=int(timeout * 1000),
    )
    try:
        await asyncio.wait_for(admin.start(), timeout)
        await asyncio.wait_for(admin.list_topics(), timeout)
    except (TimeoutError, KafkaError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await admin.close()
    return None
