"""Kafka adapters: the outbox relay, the idempotent consumer with its dead-letter topic."""

from prosum_platform.messaging.consumer import (
    EventConsumer,
    EventHandler,
    HandlerOutcome,
    Subscription,
)
from prosum_platform.messaging.kafka import KafkaConfig, ensure_topics, kafka_reachable
from prosum_platform.messaging.relay import OutboxRelay, Partitioner

__all__ = [
    "EventConsumer",
    "EventHandler",
    "HandlerOutcome",
    "KafkaConfig",
    "OutboxRelay",
    "Partitioner",
    "Subscription",
    "ensure_topics",
    "kafka_reachable",
]
