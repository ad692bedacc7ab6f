"""Creating topics on start: once ``ensure_topics`` returns, every new partition is served."""

from __future__ import annotations

import logging

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.topics import TopicSpec
from streams.transport.admin import ensure_topics


@pytest.mark.kafka
async def test_new_partitions_answer_offset_requests_without_not_leader_errors(kafka, kafka_admin, unique, caplog):
    specs = [TopicSpec(f"t{unique}.a", 4), TopicSpec(f"t{unique}.b", 2)]
    created = await ensure_topics(kafka.bootstrap, specs)
    kafka_admin.created.extend(created)
    assert created == sorted(s.name for s in specs)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(s.name, p) for s in specs for p in range(s.partitions)]
        consumer.assign(tps)
        # A consumer's first request to a new partition finds where to start; NotLeaderForPartition is logged at ERROR.
        with caplog.at_level(logging.ERROR, logger="aiokafka"):
            positions = [await consumer.position(tp) for tp in tps]
    finally:
        await consumer.stop()
    assert positions == [0] * 6
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    # A second call finds them all and creates nothing.
    assert await ensure_topics(kafka.bootstrap, specs) == []
