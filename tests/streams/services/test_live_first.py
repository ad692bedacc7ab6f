"""Backfill never crowds out live work: live records are served first, backfill a slice at a time."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import NewTopic

from streams.services.batch import Batch, BatchService
from streams.topics import TopicLayout
from streams.transport.kafka import aiokafka_producer
from streams.transport.outbox import Outbox
from streams.transport.settings import KafkaSettings

pytestmark = pytest.mark.kafka


class Recorder(BatchService):
    """Records which topics each batch held, and produces nothing."""

    role = "test-recorder"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[list[str]] = []

    async def handle(self, batch: Batch, outbox: Outbox) -> None:
        self.seen.append([r.topic for records in batch.values() for r in records])


async def test_live_records_come_before_a_backlog_of_backfill(kafka_bootstrap, kafka_admin, unique):
    live, backfill = f"t{unique}.work", f"t{unique}.work.backfill"
    await kafka_admin.create_topics([NewTopic(t, 1, 1) for t in (live, backfill)])
    kafka_admin.created.extend([live, backfill])
    kafka = KafkaSettings(bootstrap=kafka_bootstrap, backfill_slice=50)
    producer = aiokafka_producer(kafka, "test-fill")
    await producer.start()
    try:
        for i in range(1000):
            await producer.send(backfill, b"b%d" % i)  # queued; flushed below
        for i in range(10):
            await producer.send(live, b"l%d" % i)
        await producer.flush()
    finally:
        await producer.stop()

    service = Recorder(kafka, TopicLayout(prefix=f"t{unique}."), group_id=f"g.{unique}", topics=[live, backfill])
    async with service:
        await service.wait_assigned()
        deadline = asyncio.get_running_loop().time() + 30
        while sum(map(len, service.seen)) < 1010 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    order = [topic for batch in service.seen for topic in batch]
    assert order.count(live) == 10 and order.count(backfill) == 1000
    assert all(sum(t == backfill for t in batch) <= 50 for batch in service.seen)
    # All ten live records are served before the backfill backlog is: within the first few slices.
    assert max(i for i, t in enumerate(order) if t == live) < 200
