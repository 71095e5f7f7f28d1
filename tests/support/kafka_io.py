"""Talking to the broker from tests like another service would: publish envelopes, read a topic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from prosum_contracts import Envelope
from prosum_platform.messaging import KafkaConfig


async def publish(kafka: KafkaConfig, topic: str, envelopes: list[Envelope]) -> None:
    producer = kafka.producer()
    await producer.start()
    try:
        for envelope in envelopes:
            await producer.send_and_wait(topic, envelope.to_bytes(), key=envelope.subject.encode())
    finally:
        await producer.stop()


class TopicReader:
    """Reads a whole topic from the beginning (no consumer group) and keeps what it saw."""

    def __init__(self, kafka: KafkaConfig, topic: str) -> None:
        self._kafka = kafka
        self._topic = topic
        self.records: list[Any] = []
        self._reader: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> TopicReader:
        reader = AIOKafkaConsumer(
            bootstrap_servers=self._kafka.bootstrap_servers,
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=50,
        )
        await reader.start()
        partitions = reader.partitions_for_topic(self._topic)
        for _ in range(50):
            if partitions:
                break
            await reader.force_metadata_update()
            await asyncio.sleep(0.1)
            partitions = reader.partitions_for_topic(self._topic)
        tps = [TopicPartition(self._topic, p) for p in partitions or ()]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        self._reader = reader
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._reader is not None:
            await self._reader.stop()

    async def poll(self) -> None:
        assert self._reader is not None
        batch = await self._reader.getmany(timeout_ms=100)
        for records in batch.values():
            self.records.extend(records)

    async def wait_for(
        self, match: Callable[[Any], bool], count: int = 1, timeout: float = 60.0
    ) -> list[Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.records if match(r)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            await self.poll()
