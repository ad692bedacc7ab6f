"""The foundation: a real Apache Kafka broker moves messages for aiokafka and for faust."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import NewTopic

pytestmark = pytest.mark.kafka


async def _collect(consumer: AIOKafkaConsumer, count: int, timeout: float) -> list:
    """Read until ``count`` records arrived or ``timeout`` passed."""
    records: list = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(records) < count and asyncio.get_running_loop().time() < deadline:
        batch = await consumer.getmany(timeout_ms=200)
        for part in batch.values():
            records.extend(part)
    return records


async def test_aiokafka_round_trip(kafka_bootstrap, kafka_admin, unique):
    topic = f"test.roundtrip.{unique}"
    await kafka_admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    kafka_admin.created.append(topic)

    async with AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True) as producer:
        for i in range(30):
            await producer.send(topic, key=f"k{i % 5}".encode(), value=f"v{i}".encode(),
                                headers=[("scoreline-test", b"yes")])
        await producer.flush()

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=f"g.{unique}",
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        records = await _collect(consumer, 30, timeout=30)
    finally:
        await consumer.stop()

    assert sorted(r.value for r in records) == sorted(f"v{i}".encode() for i in range(30))
    assert all(dict(r.headers)["scoreline-test"] == b"yes" for r in records)
    # One key, one partition: the property shard-key routing stands on.
    partitions_by_key: dict[bytes, set[int]] = {}
    for r in records:
        partitions_by_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(p) == 1 for p in partitions_by_key.values())


async def test_faust_agent_round_trip(kafka_bootstrap, kafka_admin, unique, tmp_path):
    import faust

    source, sink = f"test.faust.in.{unique}", f"test.faust.out.{unique}"
    await kafka_admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1) for t in (source, sink)])
    kafka_admin.created.extend([source, sink])

    app = faust.App(
        f"test-faust-{unique}",
        broker=f"kafka://{kafka_bootstrap}",
        store="memory://",
        datadir=str(tmp_path),
        web_enabled=False,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        broker_rebalance_timeout=10,
    )
    in_topic = app.topic(source, value_serializer="raw")
    out_topic = app.topic(sink, value_serializer="raw")

    @app.agent(in_topic)
    async def upper(stream):
        async for value in stream:
            await out_topic.send(value=value.upper())

    await app.start()
    try:
        async with AIOKafkaProducer(bootstrap_servers=kafka_bootstrap) as producer:
            for i in range(10):
                await producer.send_and_wait(source, f"hello-{i}".encode())
        consumer = AIOKafkaConsumer(sink, bootstrap_servers=kafka_bootstrap, group_id=f"g.{unique}",
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            records = await _collect(consumer, 10, timeout=60)
        finally:
            await consumer.stop()
    finally:
        await app.stop()

    assert sorted(r.value for r in records) == sorted(f"HELLO-{i}".encode() for i in range(10))
